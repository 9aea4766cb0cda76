/**
 * Errors that say pcoip-lb itself ran out of something (file descriptors: EMFILE for the
 * process, ENFILE for the whole system; socket buffers: ENOBUFS), not that the peer failed.
 * A health check or a client connect that fails this way tells nothing about the Connector, so
 * it must never count against it: at the fd limit every check fails at once, and blaming the
 * Connectors would mark the whole pool down and turn every new client away.
 */
const OWN_EXHAUSTION_ERRNOS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS']);

/** The errno (EMFILE, ENFILE, ENOBUFS) when `err` is the proxy's own exhaustion, else undefined. */
export function ownExhaustion(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : typeof err === 'string' ? err : undefined;
  return typeof code === 'string' && OWN_EXHAUSTION_ERRNOS.has(code) ? code : undefined;
}

/** The one sentence every PLB_E_FD_EXHAUSTED line carries: what happened and what to do. */
export function fdExhaustedMessage(errno: string, what: string): string {
  const cause = errno === 'ENOBUFS' ? 'out of socket buffer space (ENOBUFS)' : errno === 'ENFILE' ? 'the system is out of file descriptors (ENFILE)' : 'out of file descriptors (EMFILE)';
  return `pcoip-lb is ${cause}: ${what}; this is the proxy's own limit, not a Connector fault: raise LimitNOFILE / ulimit -n (README "File descriptors")`;
}
