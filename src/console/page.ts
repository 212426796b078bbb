/** Page renders one view into `root`; `signal` aborts its timers and streams when the user leaves it. */
export type Page = (root: HTMLElement, signal: AbortSignal, param?: string) => void;
