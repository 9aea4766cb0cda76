/**
 * Walks `items` `size` at a time, one slice per event-loop turn (setImmediate between them),
 * then calls `done`. For periodic work over every flow (idle sweep, buffer sizing): in one go it
 * holds up every datagram queued meanwhile, and with many flows that is milliseconds.
 */
export function inSlices<T>(items: readonly T[], size: number, each: (item: T) => void, done?: () => void): void {
  const run = (from: number) => {
    const end = Math.min(items.length, from + size);
    for (let i = from; i < end; i++) each(items[i]!);
    if (end < items.length) setImmediate(run, end);
    else done?.();
  };
  run(0);
}
