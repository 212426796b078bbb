/** Size classes: the shapes warm cells are prepared in; a job takes the smallest class that fits. */

/** SizeClass is the upper bound of resources a cell of this class can be given. */
export interface SizeClass {
  name: string;
  cpu: number;
  memoryBytes: number;
  pids: number;
}

/** pickSizeClass returns the smallest class that fits the request, or null if none does. */
export function pickSizeClass(classes: readonly SizeClass[], cpu: number, memoryBytes: number): SizeClass | null {
  const fitting = classes.filter((c) => c.cpu >= cpu && c.memoryBytes >= memoryBytes);
  fitting.sort((a, b) => a.memoryBytes - b.memoryBytes || a.cpu - b.cpu);
  return fitting[0] ?? null;
}
