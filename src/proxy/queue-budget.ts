/**
 * Receive buffers sized by a latency budget (listeners.pcoipUdp.maxQueueDelay) instead of "as
 * large as allowed". A UDP receive queue holds up to 2 × SO_RCVBUF bytes; whatever waits in it
 * is delay. Under sustained overload a big queue drops as much as a small one (arrivals beyond
 * what the proxy drains are lost either way) but also adds its whole depth as standing delay:
 * 8 MiB at 20 k datagrams/s is ~180 ms on every packet (bench:latency measured 8 MiB queues
 * and 100-300 ms round trips while NGINX, with 208 KB, dropped instead). Sizing each socket's
 * buffer to `rate × budget` keeps what a stall can add to about the budget, at the cost of loss
 * when a stall outlasts it. Pure: the proxy measures the rate and applies the size.
 * (The 8 MiB measurement: bench:latency at load average ~7-11, listener queue max 8048 KiB with
 * 1518 kernel drops at 20 k/s client → Connector; the queue was full.)
 */

/**
 * Bytes the kernel charges per queued datagram beyond its payload (skb truesize): a 1200-byte
 * datagram costs 2304 bytes on loopback (measured through /proc/net/udp); NIC drivers with 2-4 KiB
 * receive buffers charge about the same. An estimate, so the budget holds within ~2×.
 */
export const KERNEL_OVERHEAD_PER_DATAGRAM = 1104;

export interface QueueBudget {
  /** The delay a full queue may add, ms (> 0). */
  maxQueueDelayMs: number;
  /** SO_RCVBUF never goes above this (listeners.pcoipUdp.recvBufferSize). */
  maxBytes: number;
  /** Nor below this: room for a burst (a PCoIP frame is tens of datagrams at once) whatever the rate. */
  minBytes: number;
}

/** Smallest SO_RCVBUF asked for: 256 KiB, a queue of ~230 MTU-sized datagrams. */
export const MIN_BUDGET_BUFFER_BYTES = 256 * 1024;

/**
 * The SO_RCVBUF for a socket that received `packets` datagrams of `bytes` payload in `intervalMs`:
 * the kernel may queue 2 × that many bytes, which at this rate drain in `maxQueueDelayMs`.
 */
export function budgetedBufferSize(packets: number, bytes: number, intervalMs: number, budget: QueueBudget): number {
  const chargedPerSecond = ((bytes + packets * KERNEL_OVERHEAD_PER_DATAGRAM) * 1000) / Math.max(1, intervalMs);
  const wanted = Math.ceil((chargedPerSecond * budget.maxQueueDelayMs) / 1000 / 2);
  const floor = Math.min(budget.minBytes, budget.maxBytes);
  return Math.max(floor, Math.min(budget.maxBytes, wanted));
}

/**
 * The size to keep: the largest target seen lately. `peak` decays by `decay` per check, so a
 * buffer grows at the first check that sees a higher rate but shrinks only after the rate stayed
 * low for a while (a session's media pauses and resumes; a lull must not leave a small buffer
 * for the burst that ends it). Starts from the size a socket was created with.
 */
export function decayedPeak(peak: number, target: number, decay: number): number {
  return Math.max(target, peak * decay);
}

/**
 * Whether to change a socket's buffer from `current` to `wanted` (a decayed peak): grow when it
 * is a quarter larger, shrink only under half, so a rate that wobbles does not cost a
 * setsockopt each check. Undefined: keep it.
 */
export function resizeTo(current: number, wanted: number): number | undefined {
  if (wanted > current * 1.25 || wanted < current / 2) return Math.round(wanted);
  return undefined;
}
