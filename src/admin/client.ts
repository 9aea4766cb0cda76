import { ErrorCodes, PlbError, type ErrorCode } from '../errors.ts';

/** The CLI's side of the admin API: JSON over HTTP, errors turned back into PlbErrors with their codes. */
export class AdminClient {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly requestTimeoutMs: number;

  constructor(baseUrl: string, token?: string, requestTimeoutMs = 10_000) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.token = token;
    this.requestTimeoutMs = requestTimeoutMs;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string): Promise<T> {
    return this.request<T>('POST', path);
  }

  private async request<T>(method: string, path: string): Promise<T> {
    const url = `${this.baseUrl}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: this.token ? { authorization: `Bearer ${this.token}` } : {},
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new PlbError(ErrorCodes.ADMIN_UNREACHABLE, `cannot reach the admin API at ${this.baseUrl}: ${cause} (is pcoip-lb running? pass --admin URL or --config FILE)`, [], { cause: err });
    }
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (!res.ok) {
      const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
      const known = Object.values(ErrorCodes) as string[];
      const code = (error?.code && known.includes(error.code) ? error.code : ErrorCodes.ADMIN_REQUEST) as ErrorCode;
      throw new PlbError(code, `${method} ${path}: HTTP ${res.status}: ${error?.message ?? text.slice(0, 200)}`);
    }
    if (body === undefined) throw new PlbError(ErrorCodes.ADMIN_REQUEST, `${method} ${path}: the answer is not JSON`);
    return body as T;
  }
}
