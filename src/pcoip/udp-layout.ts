/**
 * Which layout a PCoIP UDP flow uses (docs/pcoip-protocol.md, "UDP 4172"): with the optional 4-byte transport
 * header the ESP SPI is at bytes 4–7 and the sequence number at 8–11; without it they are at 0–3
 * and 4–7. Nothing in a datagram says which, so the layout is decided by evidence over a flow's
 * first datagrams, one direction at a time:
 *
 *   for each candidate offset o (0 or 4): SPI = u32 at o, sequence = u32 at o + 4. A pair of
 *   consecutive datagrams supports o when the SPI is the same, is not a reserved value (RFC 4303:
 *   0–255), and the sequence moved forward by 1..MAX_STEP (loss and a little reordering allowed).
 *
 * The two candidates cannot both be supported by real PCoIP traffic: with the header, offset 0
 * reads (transport header, SPI) and the "sequence" (the SPI) never moves; without it, offset 4
 * reads (sequence, next bytes) and the "SPI" (the sequence) never repeats. So a layout is decided
 * once one candidate has REQUIRED_PAIRS supporting pairs and the other none; a flow that shows no
 * such evidence within MAX_DATAGRAMS datagrams is 'unknown' (not PCoIP ESP as we know it; nothing
 * more is parsed). Pure and allocation-free: two u32 reads per datagram until decided.
 */
export type UdpLayout = 'transport-header' | 'no-transport-header' | 'unknown';

/** Offset of the SPI for each decided layout (the sequence number follows it). */
export const SPI_OFFSET: Readonly<Record<Exclude<UdpLayout, 'unknown'>, number>> = { 'transport-header': 4, 'no-transport-header': 0 };

/** Sequence numbers may move forward by at most this between two datagrams during detection. */
const MAX_STEP = 64;
/** Supporting pairs needed (i.e. this many + 1 datagrams of one SA). */
export const REQUIRED_PAIRS = 3;
/** Give up after this many parseable datagrams without a decision. */
export const MAX_DATAGRAMS = 32;
/** RFC 4303 §2.1: SPI 0 is reserved, 1–255 are reserved by IANA. */
const MIN_SPI = 256;

export class LayoutDetector {
  /** Decided layout, or undefined while the evidence is still coming. */
  layout: UdpLayout | undefined;
  private seen = 0;
  private prevA0 = 0;
  private prevB0 = 0;
  private prevA4 = 0;
  private prevB4 = 0;
  private prevHas4 = false;
  private support0 = 0;
  private support4 = 0;

  /** Feeds one datagram; returns the layout once decided (then stop calling). */
  push(msg: Buffer): UdpLayout | undefined {
    if (this.layout !== undefined) return this.layout;
    if (msg.length < 8) return undefined;
    const a0 = msg.readUInt32BE(0);
    const b0 = msg.readUInt32BE(4);
    const has4 = msg.length >= 12;
    const b4 = has4 ? msg.readUInt32BE(8) : 0;
    if (this.seen > 0) {
      if (a0 === this.prevA0 && a0 >= MIN_SPI && forwardStep(this.prevB0, b0)) this.support0++;
      // a4 is b0: the same four bytes read as the SPI of the header layout.
      if (has4 && this.prevHas4 && b0 === this.prevA4 && b0 >= MIN_SPI && forwardStep(this.prevB4, b4)) this.support4++;
    }
    this.prevA0 = a0;
    this.prevB0 = b0;
    this.prevA4 = b0;
    this.prevB4 = b4;
    this.prevHas4 = has4;
    this.seen++;
    if (this.support4 >= REQUIRED_PAIRS && this.support0 === 0) this.layout = 'transport-header';
    else if (this.support0 >= REQUIRED_PAIRS && this.support4 === 0) this.layout = 'no-transport-header';
    else if (this.seen >= MAX_DATAGRAMS) this.layout = 'unknown';
    return this.layout;
  }
}

/** `next` is 1..MAX_STEP after `prev`, modulo 2^32 (an extended sequence number's low half wraps). */
function forwardStep(prev: number, next: number): boolean {
  const step = (next - prev) >>> 0;
  return step >= 1 && step <= MAX_STEP;
}
