import { MIB } from '../../shared/units.js';

/** Size classes: the shapes warm cells are prepared in; a job takes the smallest class that fits. */

/** SizeClass is the upper bound of resources a cell of this class can be given. */
export interface SizeClass {
  name: string;
  cpu: number;
  memoryBytes: number;
  pids: number;
  diskBytes: number;
}

/** sizeClassesFromConfig converts the configured classes (MiB) to byte-sized SizeClasses. */
export function sizeClassesFromConfig(classes: ReadonlyArray<{ name: string; cpu: number; memoryMiB: number; pids: number; diskMiB: number }>): SizeClass[] {
  return classes.map((c) => ({ name: c.name, cpu: c.cpu, memoryBytes: c.memoryMiB * MIB, pids: c.pids, diskBytes: c.diskMiB * MIB }));
}

/** pickSizeClass returns the smallest class that fits the request, or null if none does. */
export function pickSizeClass(classes: readonly SizeClass[], cpu: number, memoryBytes: number, diskBytes: number): SizeClass | null {
  const fitting = classes.filter((c) => c.cpu >= cpu && c.memoryBytes >= memoryBytes && c.diskBytes >= diskBytes);
  fitting.sort((a, b) => a.memoryBytes - b.memoryBytes || a.cpu - b.cpu || a.diskBytes - b.diskBytes);
  return fitting[0] ?? null;
}
