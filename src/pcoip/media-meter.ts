import { performance } from 'node:perf_hooks';
import { LayoutDetector, SPI_OFFSET, type UdpLayout } from './udp-layout.ts';

/**
 * Media quality of one direction of a PCoIP UDP flow, from the clear ESP header of each datagram
 * as it passes the proxy (docs/pcoip-protocol.md: SPI, then a sequence number that starts at 1 and grows by one
 * per datagram of a security association; each direction has its own SPI). Nothing is decrypted
 * and nothing is changed. What it counts (docs/sessions.md has the operator's version):
 *
 * - lost: sequence numbers never seen. A number missing when a higher one arrives is *pending*
 *   while it is within WINDOW of the highest (it may still come, reordered); once it leaves the
 *   window it is *final*. `lost` = final + pending; counters exported to Prometheus use final only
 *   (they must never go down).
 * - reordered: arrived after a higher number, within the window (not lost after all).
 * - late: arrived more than WINDOW behind the highest; it was already counted lost.
 * - duplicates: a number seen before (within the window).
 * - rekeys: SPI changes. A new SPI starts a new sequence (RFC 4303); datagrams of the previous SPI
 *   that straggle in after the change count as late, not as another change.
 * - resyncs: a jump of more than MAX_JUMP either way without an SPI change (a peer that restarted
 *   its counter, or not ESP): tracking restarts there instead of counting a million losses.
 * - jitter: RFC 3550's estimator (J += (|D| − J) / 16), D being the change of inter-arrival
 *   interval between consecutive in-order datagrams. The sender's timestamps are inside the
 *   ciphertext, so this is the variation of *arrival* spacing at the proxy (it includes the
 *   sender's own burstiness and the proxy's event loop). Sampled: the clock is read for three
 *   consecutive in-order datagrams (two intervals, one D) every JITTER_SAMPLE_EVERY, i.e. on ~9 %
 *   of datagrams, so the estimate moves once per sample instead of once per datagram.
 *
 * Why sampled reads and not a clock per datagram or a coarse timer-driven clock: on this project's
 * machines a clock read costs 130–210 ns (1–2 % of a forwarded datagram), and a 1 ms timer that
 * refreshes a cached time costs ~31 ms of CPU per second in an idle process (38 µs per wake-up),
 * which at 20 k datagrams/s is more than reading the clock every time (docs/sessions.md).
 *
 * Allocation-free; the clock is injectable (tests). Cost per datagram once the layout is known:
 * two u32 reads and a handful of integer operations, plus a clock read on sampled datagrams.
 */

/** Sequence numbers tracked behind the highest (one u32 bitmap, as IPsec's anti-replay window). */
export const WINDOW = 32;
/** A forward or backward jump beyond this is a resync, not loss (≈ 40 s of a 26 k packets/s session). */
export const MAX_JUMP = 1 << 20;
const ALL_SEEN = 0xffffffff;
/** RFC 4303 §2.1: 0 is reserved, 1–255 are reserved by IANA. */
const MIN_SPI = 256;
/** In-order datagrams between two jitter samples (each sample reads the clock three times). */
export const JITTER_SAMPLE_EVERY = 32;

const monotonicMs = () => performance.now();

export interface DirectionFigures {
  layout: UdpLayout | 'detecting';
  /** Current SPI as 8 hex digits (not a secret: it is sent in clear), undefined before the layout is known. */
  spi: string | undefined;
  /** Every datagram seen in this direction. */
  datagrams: number;
  /** Datagrams counted in the sequence accounting (after detection, not duplicates). */
  received: number;
  lost: number;
  /** lost / (received + lost), 0 when nothing was tracked. */
  lossRatio: number;
  reordered: number;
  late: number;
  duplicates: number;
  rekeys: number;
  resyncs: number;
  /** Datagrams the accounting skipped: too short for the layout, or a reserved SPI. */
  unparsed: number;
  jitterMs: number;
  /** Samples behind jitterMs (it settles after ~16). */
  jitterSamples: number;
}

export class DirectionMeter {
  private readonly detector = new LayoutDetector();
  /** SPI offset once decided; -1 while detecting; -2 when the layout is unknown (nothing parsed). */
  private offset = -1;
  private layout: UdpLayout | undefined;
  datagrams = 0;
  received = 0;
  lostFinal = 0;
  reordered = 0;
  late = 0;
  duplicates = 0;
  rekeys = 0;
  resyncs = 0;
  unparsed = 0;
  /** RFC 3550 jitter estimate, ms. */
  jitter = 0;
  jitterSamples = 0;
  private spi = 0;
  private previousSpi = -1;
  private started = false;
  private highest = 0;
  /** Bit k−1 set: sequence number highest − k was seen (k = 1..WINDOW). */
  private window = ALL_SEEN;
  /** In-order datagrams until the next jitter sample starts (≤ 0: at the next one; an interrupted sample restarts at once). */
  private untilSample = 1;
  /** The sample in progress: 0 none, 1 first reading taken, 2 first interval taken. */
  private sampleStep = 0;
  private sampleAt = 0;
  private sampleInterval = 0;
  private readonly clock: () => number;

  constructor(clock: () => number = monotonicMs) {
    this.clock = clock;
  }

  /** One datagram of this direction, as forwarded. */
  observe(msg: Buffer): void {
    this.datagrams++;
    let off = this.offset;
    if (off < 0) {
      if (off === -2) return;
      const layout = this.detector.push(msg);
      if (layout === undefined) return;
      this.layout = layout;
      if (layout === 'unknown') {
        this.offset = -2;
        return;
      }
      off = this.offset = SPI_OFFSET[layout];
    }
    if (msg.length < off + 8) {
      this.unparsed++;
      return;
    }
    const spi = msg.readUInt32BE(off);
    const seq = msg.readUInt32BE(off + 4);
    if (spi !== this.spi || !this.started) return this.newSpi(spi, seq);
    this.track(seq);
  }

  /** Pending losses become final (the flow ended). */
  finish(): void {
    this.lostFinal += WINDOW - popcount(this.window);
    this.window = ALL_SEEN;
  }

  /** Missing numbers still within the window (may yet arrive). */
  get pendingLost(): number {
    return WINDOW - popcount(this.window);
  }

  get detectedLayout(): UdpLayout | 'detecting' {
    return this.layout ?? 'detecting';
  }

  figures(): DirectionFigures {
    const lost = this.lostFinal + this.pendingLost;
    const tracked = this.received + lost;
    return {
      layout: this.detectedLayout,
      spi: this.started ? this.spi.toString(16).padStart(8, '0') : undefined,
      datagrams: this.datagrams,
      received: this.received,
      lost,
      lossRatio: tracked === 0 ? 0 : lost / tracked,
      reordered: this.reordered,
      late: this.late,
      duplicates: this.duplicates,
      rekeys: this.rekeys,
      resyncs: this.resyncs,
      unparsed: this.unparsed,
      jitterMs: Math.round(this.jitter * 1000) / 1000,
      jitterSamples: this.jitterSamples,
    };
  }

  private newSpi(spi: number, seq: number): void {
    if (spi < MIN_SPI) {
      this.unparsed++;
      return;
    }
    if (this.started) {
      // A datagram of the SA just replaced, overtaken by the first ones of the new SA.
      if (spi === this.previousSpi) {
        this.late++;
        return;
      }
      this.finish();
      this.rekeys++;
      this.previousSpi = this.spi;
    }
    this.spi = spi;
    this.started = true;
    this.restart(seq);
  }

  private restart(seq: number): void {
    this.highest = seq;
    this.window = ALL_SEEN;
    this.received++;
    this.sampleStep = 0;
  }

  private track(seq: number): void {
    const forward = (seq - this.highest) >>> 0;
    if (forward === 0) {
      this.duplicates++;
      return;
    }
    if (forward < 0x80000000) {
      if (forward > MAX_JUMP) {
        this.finish();
        this.resyncs++;
        return this.restart(seq);
      }
      this.advance(forward);
      this.highest = seq;
      this.received++;
      if (forward === 1) {
        if (this.sampleStep !== 0) this.sampleNext();
        else if (--this.untilSample <= 0) (this.sampleAt = this.clock()), (this.sampleStep = 1);
      } else this.sampleStep = 0; // the interval would span a lost datagram: not jitter
      return;
    }
    this.sampleStep = 0;
    const behind = (this.highest - seq) >>> 0;
    if (behind > MAX_JUMP) {
      this.finish();
      this.resyncs++;
      return this.restart(seq);
    }
    if (behind > WINDOW) {
      this.late++;
      return;
    }
    const bit = (1 << (behind - 1)) >>> 0;
    if ((this.window & bit) !== 0) {
      this.duplicates++;
      return;
    }
    this.window = (this.window | bit) >>> 0;
    this.reordered++;
    this.received++;
  }

  /** The second and third datagram of a jitter sample: two intervals, one D. */
  private sampleNext(): void {
    const now = this.clock();
    const interval = now - this.sampleAt;
    this.sampleAt = now;
    if (this.sampleStep === 1) {
      this.sampleInterval = interval;
      this.sampleStep = 2;
      return;
    }
    this.jitter += (Math.abs(interval - this.sampleInterval) - this.jitter) / 16;
    this.jitterSamples++;
    this.sampleStep = 0;
    this.untilSample = JITTER_SAMPLE_EVERY;
  }

  /** The highest moves up by `d`: numbers leaving the window unseen are lost for good. */
  private advance(d: number): void {
    const w = this.window;
    if (d === 1) {
      if (w >>> 31 === 0) this.lostFinal++;
      this.window = ((w << 1) | 1) >>> 0;
    } else if (d < WINDOW) {
      this.lostFinal += d - popcount(w >>> (WINDOW - d));
      this.window = ((w << d) | (1 << (d - 1))) >>> 0;
    } else {
      // Every old bit leaves; of the d − 1 skipped numbers, those more than WINDOW behind leave at once.
      this.lostFinal += WINDOW - popcount(w) + Math.max(0, d - 1 - WINDOW);
      this.window = d === WINDOW ? 0x80000000 : 0;
    }
  }
}

function popcount(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}
