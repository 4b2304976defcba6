/**
 * A tiny in-test HTTP responder for component tests: routes "METHOD /path" to handlers and
 * returns real Response objects, so the real CmkApi client (headers, error parsing) is exercised.
 */
export type Handler = (req: { method: string; path: string; query: URLSearchParams; body: unknown; headers: Record<string, string> }) =>
  | { status?: number; body?: unknown; text?: string }
  | undefined;

export function fakeFetch(routes: Record<string, Handler>, log: string[] = []) {
  return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input), "http://api.test");
    const method = (init?.method ?? "GET").toUpperCase();
    const key = `${method} ${url.pathname}`;
    log.push(`${key}${url.search}`);
    const handler = routes[key];
    if (!handler) return new Response(JSON.stringify({ error: "not_found", message: `no route ${key}` }), { status: 404 });
    const reply = handler({
      method,
      path: url.pathname,
      query: url.searchParams,
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
      headers: (init?.headers ?? {}) as Record<string, string>,
    }) ?? {};
    const status = reply.status ?? 200;
    const text = reply.text ?? (reply.body === undefined ? "" : JSON.stringify(reply.body));
    return new Response(status === 204 ? null : text, { status, headers: { "Content-Type": "application/json" } });
  };
}

export function jwt(claims: Record<string, unknown>): string {
  const enc = (o: unknown) => btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${enc({ alg: "RS256", typ: "JWT" })}.${enc(claims)}.c2ln`;
}
