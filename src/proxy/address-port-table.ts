/**
 * A map keyed by (address, port) without building an `address|port` string per lookup: the UDP
 * listener looks its flow up for every datagram, and rinfo.address is already a string Node made.
 */
export class AddressPortTable<T> {
  private readonly byAddress = new Map<string, Map<number, T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(address: string, port: number): T | undefined {
    return this.byAddress.get(address)?.get(port);
  }

  has(address: string, port: number): boolean {
    return this.byAddress.get(address)?.has(port) ?? false;
  }

  set(address: string, port: number, value: T): void {
    let ports = this.byAddress.get(address);
    if (!ports) {
      ports = new Map();
      this.byAddress.set(address, ports);
    }
    if (!ports.has(port)) this.count++;
    ports.set(port, value);
  }

  delete(address: string, port: number): boolean {
    const ports = this.byAddress.get(address);
    if (!ports || !ports.delete(port)) return false;
    this.count--;
    if (ports.size === 0) this.byAddress.delete(address);
    return true;
  }

  clear(): void {
    this.byAddress.clear();
    this.count = 0;
  }

  /** Safe to delete entries while iterating (Map iteration tolerates it). */
  *values(): IterableIterator<T> {
    for (const ports of this.byAddress.values()) yield* ports.values();
  }
}
