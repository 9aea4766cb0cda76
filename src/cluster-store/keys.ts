/**
 * Where each kind of shared state lives in the store (docs/ha.md has the table). One prefix
 * (`cluster.keyPrefix`) starts every key and the channel, so several pools can share one Redis.
 *
 *  <p>:pin:<client key>          string, JSON pin; PX = affinity TTL + refresh slack
 *  <p>:cookie:<digest>           string, JSON learned session; PX as pins
 *  <p>:log-id:<digest>           "
 *  <p>:alloc:<sni>               string, JSON allocation; PX = the connect tag's lifetime, then TTL once claimed
 *  <p>:operator                  hash, Connector id → JSON operator state; no TTL (survives restarts)
 *  <p>:instance:<instance id>    string, JSON heartbeat; PX = 3 heartbeats
 *  <p>:instances                 set of instance ids (an index of the heartbeat keys; a member whose key expired is gone)
 *  <p>:changes                   pub/sub channel, JSON { from, change }
 */
export class StoreKeys {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  pin(clientKey: string): string {
    return `${this.prefix}:pin:${clientKey}`;
  }

  session(kind: 'cookie' | 'log-id', key: string): string {
    return `${this.prefix}:${kind}:${key}`;
  }

  allocation(sni: string): string {
    return `${this.prefix}:alloc:${sni}`;
  }

  get operator(): string {
    return `${this.prefix}:operator`;
  }

  instance(id: string): string {
    return `${this.prefix}:instance:${id}`;
  }

  get instances(): string {
    return `${this.prefix}:instances`;
  }

  get channel(): string {
    return `${this.prefix}:changes`;
  }
}
