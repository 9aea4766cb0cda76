import { describe, expect, it } from 'vitest';
import { LayoutDetector, MAX_DATAGRAMS, REQUIRED_PAIRS } from '../../src/pcoip/udp-layout.ts';
import { DirectionMeter, JITTER_SAMPLE_EVERY, MAX_JUMP, WINDOW } from '../../src/pcoip/media-meter.ts';

/** A PCoIP datagram: [transport header] SPI, sequence, then payload bytes. */
function datagram(spi: number, seq: number, options: { header?: boolean; headerValue?: number; size?: number } = {}): Buffer {
  const header = options.header ?? true;
  const buf = Buffer.alloc(Math.max(options.size ?? 64, header ? 12 : 8));
  let at = 0;
  if (header) (buf.writeUInt32BE(options.headerValue ?? 0, 0), (at = 4));
  buf.writeUInt32BE(spi >>> 0, at);
  buf.writeUInt32BE(seq >>> 0, at + 4);
  // Payload that looks like ciphertext: anything but a second header.
  for (let i = at + 8; i < buf.length; i++) buf[i] = (i * 37 + seq) & 0xff;
  return buf;
}

const SPI = 0x1234abcd;

/** Feeds sequence numbers (one datagram each, 1 ms apart unless times are given) and returns the figures. */
function run(seqs: Array<number | [spi: number, seq: number]>, options: { header?: boolean; times?: number[] } = {}) {
  let now = 0;
  const meter = new DirectionMeter(() => now);
  seqs.forEach((s, i) => {
    const [spi, seq] = Array.isArray(s) ? s : [SPI, s];
    now = options.times?.[i] ?? i;
    meter.observe(datagram(spi, seq, { header: options.header ?? true }));
  });
  return meter;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('LayoutDetector', () => {
  const cases: Array<{ name: string; packets: Buffer[]; layout: string | undefined }> = [
    { name: 'transport header (value 0)', packets: range(1, 4).map((s) => datagram(SPI, s)), layout: 'transport-header' },
    { name: 'transport header with a constant non-zero QoS value', packets: range(1, 4).map((s) => datagram(SPI, s, { headerValue: 0x40000000 })), layout: 'transport-header' },
    { name: 'no transport header', packets: range(1, 4).map((s) => datagram(SPI, s, { header: false })), layout: 'no-transport-header' },
    { name: 'no header, mid-SA with loss between the first datagrams', packets: [100, 103, 104, 110].map((s) => datagram(SPI, s, { header: false })), layout: 'no-transport-header' },
    { name: 'header, sequence wrapping past 2^32 (extended sequence numbers)', packets: [0xfffffffe, 0xffffffff, 0, 1].map((s) => datagram(SPI, s)), layout: 'transport-header' },
    { name: 'too few datagrams to decide', packets: range(1, REQUIRED_PAIRS).map((s) => datagram(SPI, s)), layout: undefined },
    { name: 'SPI in the reserved range 0–255 is no evidence', packets: range(1, 6).map((s) => datagram(7, s, { header: false })), layout: undefined },
    { name: 'random bytes: unknown after the bound', packets: range(1, MAX_DATAGRAMS).map((s) => Buffer.from(Array.from({ length: 40 }, (_, i) => (s * 131 + i * 17) & 0xff))), layout: 'unknown' },
    { name: 'datagrams shorter than 8 bytes are ignored', packets: range(1, 10).map(() => Buffer.alloc(6)), layout: undefined },
  ];
  it.each(cases)('$name → $layout', ({ packets, layout }) => {
    const d = new LayoutDetector();
    let got: string | undefined;
    for (const p of packets) got = d.push(p);
    expect(got).toBe(layout);
  });

  it('decides no earlier than REQUIRED_PAIRS + 1 datagrams, and never changes its mind', () => {
    const d = new LayoutDetector();
    const decisions = range(1, 10).map((s) => d.push(datagram(SPI, s)));
    expect(decisions.slice(0, REQUIRED_PAIRS)).toEqual(Array(REQUIRED_PAIRS).fill(undefined));
    expect(new Set(decisions.slice(REQUIRED_PAIRS))).toEqual(new Set(['transport-header']));
    expect(d.push(datagram(SPI, 11, { header: false }))).toBe('transport-header');
  });
});

describe('DirectionMeter: sequence accounting', () => {
  // Detection consumes the first REQUIRED_PAIRS datagrams; tracking starts with the deciding one (seq 4 here).
  const lead = range(1, 4);
  const cases: Array<{ name: string; seqs: number[]; expect: Partial<Record<'received' | 'lost' | 'reordered' | 'late' | 'duplicates' | 'resyncs', number>> }> = [
    { name: 'in order', seqs: [...lead, ...range(5, 100)], expect: { received: 97, lost: 0, reordered: 0, duplicates: 0 } },
    { name: 'one gap', seqs: [...lead, ...range(5, 9), ...range(11, 100)], expect: { received: 96, lost: 1, reordered: 0 } },
    { name: 'every 10th missing', seqs: [...lead, ...range(5, 104).filter((s) => s % 10 !== 0)], expect: { received: 91, lost: 10 } },
    { name: 'a swap is reordering, not loss', seqs: [...lead, 5, 7, 6, 8, 9], expect: { received: 6, lost: 0, reordered: 1 } },
    { name: 'a duplicate', seqs: [...lead, 5, 6, 6, 7, 5], expect: { received: 4, lost: 0, duplicates: 2 } },
    { name: 'a late arrival within the window fills the gap', seqs: [...lead, 5, ...range(7, 30), 6], expect: { received: 27, lost: 0, reordered: 1 } },
    { name: 'later than the window: lost, then late', seqs: [...lead, 5, ...range(7, 7 + WINDOW + 2), 6], expect: { lost: 1, late: 1, reordered: 0 } },
    { name: 'a big gap (burst loss)', seqs: [...lead, 5, 500, 501], expect: { received: 4, lost: 494 } },
    { name: 'a jump beyond MAX_JUMP is a resync, not loss', seqs: [...lead, 5, 5 + MAX_JUMP + 10, 6 + MAX_JUMP + 10], expect: { lost: 0, resyncs: 1, received: 4 } },
    { name: 'sequence wraps at 2^32 without loss', seqs: [0xfffffffc, 0xfffffffd, 0xfffffffe, 0xffffffff, 0, 1, 2], expect: { lost: 0, received: 4 } },
  ];
  it.each(cases)('$name', ({ seqs, expect: want }) => {
    const f = run(seqs).figures();
    expect(f.layout).toBe('transport-header');
    for (const [k, v] of Object.entries(want)) expect(f[k as keyof typeof f], k).toBe(v);
  });

  it('pending losses turn final when the flow ends; exported (final) counts never go down', () => {
    const m = run([...lead, 5, 7, 8]);
    expect(m.pendingLost).toBe(1);
    expect(m.lostFinal).toBe(0);
    expect(m.figures().lost).toBe(1);
    m.finish();
    expect(m.lostFinal).toBe(1);
    expect(m.pendingLost).toBe(0);
  });

  it('parses a flow without the transport header the same way', () => {
    const f = run([...lead, ...range(5, 104).filter((s) => s % 10 !== 0)], { header: false }).figures();
    expect(f).toMatchObject({ layout: 'no-transport-header', received: 91, lost: 10, spi: SPI.toString(16) });
  });

  it('a rekey (new SPI) is counted, restarts the sequence without counting loss, and old-SA stragglers are late', () => {
    const NEW = 0x0badf00d;
    const m = run([...lead, 5, 6, 8, [NEW, 1], [SPI, 7], [NEW, 2], [NEW, 3]]);
    const f = m.figures();
    expect(f.rekeys).toBe(1);
    expect(f.spi).toBe('0badf00d');
    expect(f.late).toBe(1); // SPI's 7, after the switch
    expect(f.lost).toBe(1); // SPI's 7 was missing when the SA ended
    expect(f.received).toBe(4 + 3);
  });

  it('ignores datagrams before the layout is known and reserved SPIs after it', () => {
    const m = new DirectionMeter();
    for (const s of lead) m.observe(datagram(SPI, s));
    m.observe(datagram(3, 5));
    m.observe(Buffer.alloc(10));
    const f = m.figures();
    expect(f.datagrams).toBe(6);
    expect(f.received).toBe(1);
    expect(f.unparsed).toBe(2);
  });

  it('an unknown layout parses nothing further', () => {
    const m = new DirectionMeter();
    for (let i = 0; i < MAX_DATAGRAMS + 10; i++) m.observe(Buffer.from(Array.from({ length: 30 }, (_, j) => (i * 97 + j * 13) & 0xff)));
    expect(m.figures()).toMatchObject({ layout: 'unknown', received: 0, lost: 0, datagrams: MAX_DATAGRAMS + 10 });
  });
});

describe('DirectionMeter: jitter (RFC 3550 estimator over sampled arrival spacing)', () => {
  // Enough datagrams for ~60 samples (one every JITTER_SAMPLE_EVERY + 3): the estimate settles after ~16.
  const seqs = range(1, 60 * (JITTER_SAMPLE_EVERY + 3));
  const cases = [
    { name: 'steady 2 ms spacing', times: seqs.map((s) => s * 2), min: 0, max: 0.001 },
    { name: 'alternating 1 ms / 3 ms spacing', times: seqs.map((s) => s * 2 + (s % 2)), min: 1.8, max: 2.0 },
    { name: 'bursts of 4 then a 20 ms pause', times: seqs.map((s) => Math.floor(s / 4) * 20), min: 4, max: 12 },
  ];
  it.each(cases)('$name', ({ times, min, max }) => {
    const j = run(seqs, { times }).figures().jitterMs;
    expect(j).toBeGreaterThanOrEqual(min);
    expect(j).toBeLessThanOrEqual(max);
  });

  it('does not count the interval across a lost datagram as jitter', () => {
    const times = range(1, 300).map((s) => s * 2);
    const lossy = run(range(1, 300).filter((s) => s % 10 !== 0), { times: range(1, 300).filter((s) => s % 10 !== 0).map((s) => s * 2) });
    expect(run(range(1, 300), { times }).figures().jitterMs).toBe(0);
    expect(lossy.figures().jitterMs).toBe(0);
    expect(lossy.figures().jitterSamples).toBeGreaterThan(3);
  });

  it('reads the clock on about 3 of every JITTER_SAMPLE_EVERY + 3 in-order datagrams, not per datagram', () => {
    let reads = 0;
    const meter = new DirectionMeter(() => ++reads);
    const n = 10 * (JITTER_SAMPLE_EVERY + 3);
    for (const s of range(1, n)) meter.observe(datagram(SPI, s));
    expect(reads).toBeLessThanOrEqual(Math.ceil((3 * n) / (JITTER_SAMPLE_EVERY + 3)) + 3);
    expect(reads).toBeGreaterThan(0);
    expect(meter.figures().jitterSamples).toBeGreaterThanOrEqual(9);
  });
});
