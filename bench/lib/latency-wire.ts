/**
 * The datagrams of bench:latency (bench/latency.ts) between its probe and load clients and its
 * echo Connector. Every datagram is 1200 bytes (PCoIP's default MTU); the first byte says what
 * it is, the rest carries a stream id, a sequence number and monotonic clock stamps
 * (process.hrtime.bigint(): CLOCK_MONOTONIC, the same clock in every process of the machine,
 * so a one-way delay between two processes is a subtraction).
 */
export const DATAGRAM_BYTES = 1200;

export const KIND_OFFSET = 0;
/** A probe: the Connector stamps its receive time and echoes it at once. */
export const KIND_PROBE = 0x50; // 'P'
/** Background, client → Connector: counted and discarded by the Connector. */
export const KIND_UP = 0x55; // 'U'
/** Asks the Connector to stream background datagrams back to the sender (Connector → client). */
export const KIND_DOWN_START = 0x44; // 'D'
/** Background, Connector → client. */
export const KIND_DOWN = 0x64; // 'd'
/** Ends a Connector → client stream. */
export const KIND_DOWN_STOP = 0x53; // 'S'

export const STREAM_OFFSET = 4; // uint32
export const SEQ_OFFSET = 8; // uint32
/** KIND_DOWN_START: datagrams per second (uint32) and for how long at most, ms (uint32). */
export const RATE_OFFSET = 12;
export const DURATION_OFFSET = 16;
/** KIND_PROBE: when the client sent it, ns (bigint64). */
export const SENT_AT_OFFSET = 16;
/** KIND_PROBE echo: when the Connector received it, ns (bigint64). */
export const CONNECTOR_AT_OFFSET = 24;

export function datagram(kind: number, stream: number): Buffer {
  const b = Buffer.alloc(DATAGRAM_BYTES);
  b[KIND_OFFSET] = kind;
  b.writeUInt32BE(stream, STREAM_OFFSET);
  return b;
}
