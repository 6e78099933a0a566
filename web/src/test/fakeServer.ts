/**
 * A stand-in for the HTTP server behind `fetch` (the one true external of the console):
 * answers by "METHOD /path" and records every request so tests can check what was sent.
 */
import { createApi, type Api } from "../api/client";

export interface Answer {
  status: number;
  body?: unknown;
}

export type Handler = (req: { body: unknown; url: URL }) => Answer | Promise<Answer>;

export interface Recorded {
  method: string;
  path: string;
  body: unknown;
  /** the query string without `?`, when there is one */
  query?: string | undefined;
}

export class FakeServer {
  readonly calls: Recorded[] = [];
  private readonly routes = new Map<string, Handler>();
  unauthenticated = 0;

  on(method: string, path: string, handler: Handler | Answer): this {
    this.routes.set(`${method} ${path}`, typeof handler === "function" ? handler : () => handler);
    return this;
  }

  readonly fetch = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const text = await request.text();
    const body: unknown = text ? JSON.parse(text) : undefined;
    const query = url.search ? url.search.slice(1) : undefined;
    this.calls.push({ method: request.method, path: url.pathname, body, query });
    const handler = this.routes.get(`${request.method} ${url.pathname}`);
    const answer = handler ? await handler({ body, url }) : { status: 404, body: { error: "no-route" } };
    if (answer.status === 204) return new Response(null, { status: 204 });
    return new Response(answer.body === undefined ? "" : JSON.stringify(answer.body), {
      status: answer.status,
      headers: { "Content-Type": "application/json" },
    });
  };

  api(): Api {
    return createApi({
      baseUrl: "http://console.test",
      fetch: this.fetch,
      onUnauthenticated: () => {
        this.unauthenticated += 1;
      },
    });
  }

  callsTo(method: string, path: string): Recorded[] {
    return this.calls.filter((c) => c.method === method && c.path === path);
  }
}
