import { createClient, ErrorReply, type AnyRedisClientOptions } from '@redis/client';

/**
 * The two connections to the store (node-redis, docs/decisions.md): one for commands, one
 * subscribed to the changes channel (a subscribed Redis connection takes no other commands).
 * node-redis reconnects both with the back-off in the options and re-subscribes; this class
 * only reports when both are usable (`onUsable`) and when either is not (`onTrouble`), and runs
 * batches of raw commands as one pipeline. Commands fail at once while a connection is away
 * (offline queue off), so nothing piles up behind a dead store.
 */
export type Command = readonly string[];
/** A reply per command, or the Error that command got (WRONGTYPE on a garbage key, …). */
export type Reply = unknown;

export interface StoreConnectionEvents {
  /** Both connections are ready and subscribed (at start, and after every reconnect). */
  onUsable(): void;
  /** A connection failed or is reconnecting; `reason` is the library's message (no secrets in it). */
  onTrouble(reason: string): void;
  onMessage(message: string): void;
}

type Client = ReturnType<typeof createClient>;

export class StoreConnection {
  private readonly main: Client;
  private readonly sub: Client;
  private readonly channel: string;
  private readonly events: StoreConnectionEvents;
  private subscribed = false;
  private closed = false;

  constructor(options: AnyRedisClientOptions, channel: string, events: StoreConnectionEvents) {
    this.channel = channel;
    this.events = events;
    this.main = createClient(options);
    this.sub = createClient({ ...options, name: `${options.name ?? 'pcoip-lb'}:sub` });
    for (const client of [this.main, this.sub]) {
      // Every failed reconnect attempt emits 'error'; the replica logs state changes, not these.
      client.on('error', (err: Error) => this.trouble(err.message));
      client.on('reconnecting', () => this.trouble('reconnecting'));
      client.on('ready', () => this.checkUsable());
    }
  }

  /** Starts connecting (never waits: the first connect may take as long as the store is away). */
  start(): void {
    void this.main.connect().catch(() => undefined);
    void this.sub
      .connect()
      .then(() => this.sub.subscribe(this.channel, (message: string) => this.events.onMessage(message)))
      .then(() => {
        this.subscribed = true;
        this.checkUsable();
      })
      .catch(() => undefined);
  }

  get usable(): boolean {
    return !this.closed && this.subscribed && this.main.isReady && this.sub.isReady;
  }

  /**
   * Runs the commands as one pipeline: node-redis writes the commands of one tick together and
   * reads the replies in order (one round trip). A command the server refused (WRONGTYPE on a
   * garbage key) gets its Error as reply; a connection failure rejects the whole batch.
   */
  async pipeline(commands: readonly Command[]): Promise<Reply[]> {
    if (commands.length === 0) return [];
    const settled = await Promise.allSettled(commands.map((c) => this.main.sendCommand([...c])));
    return settled.map((r) => {
      if (r.status === 'fulfilled') return r.value;
      if (r.reason instanceof ErrorReply) return r.reason;
      throw r.reason;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const client of [this.main, this.sub]) {
      if (client.isOpen) client.destroy();
    }
  }

  private trouble(reason: string): void {
    if (!this.closed) this.events.onTrouble(reason);
  }

  private checkUsable(): void {
    if (this.usable) this.events.onUsable();
  }
}
