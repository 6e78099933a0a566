/**
 * The console's only door to the REST API. Every call goes through openapi-fetch typed by
 * `schema.d.ts`, which is generated from `openapi.json` (the server's own document), so a
 * renamed field or path on the server breaks `npm run typecheck` instead of the browser.
 */
import createClient from "openapi-fetch";
import type { paths } from "./schema";

/**
 * Types come from the paths (not from schema names), so they hold whatever the server's
 * generator calls its models: `JsonOf<path, method, status>` is that answer's JSON body.
 */
type JsonOf<
  P extends keyof paths,
  M extends keyof paths[P],
  S extends number,
> = paths[P][M] extends { responses: infer R }
  ? S extends keyof R
    ? R[S] extends { content: { "application/json": infer T } }
      ? T
      : never
    : never
  : never;

const V1 = "/api/v1/sandbox";
type V1<S extends string> = `${typeof V1}${S}` & keyof paths;

export type SandboxItem = JsonOf<V1<"/sessions/{id}">, "get", 200>;
export type Condition = SandboxItem["conditions"][number];
export type Agent = JsonOf<V1<"/agents">, "get", 200>["agents"][number];
export type WhoAmI = JsonOf<V1<"/whoami">, "get", 200>;
export type AuthConfig = JsonOf<V1<"/auth/config">, "get", 200>;
export type ByosConfig = JsonOf<V1<"/byos/claude-code/config">, "get", 200>;
export type ByosStatus = JsonOf<V1<"/byos/claude-code/status">, "get", 200>;
export type TerminalItem = JsonOf<V1<"/sessions/{id}/terminals">, "post", 201>;
export type CreateSessionRequest = { agent: string; name?: string; repo?: string };

export type InstallState = "idle" | "running" | "succeeded" | "failed";
export type InstallStatus = JsonOf<V1<"/agents/{slug}/install">, "get", 200>;
export type LoginLink = JsonOf<V1<"/login-links">, "post", 201>;
/** Model usage and budgets (docs/gateway.md, "Usage and budgets"). */
export type Usage30d = NonNullable<SandboxItem["usage30d"]>;
export type UsageReport = JsonOf<V1<"/usage">, "get", 200>;
export type UsageDay = UsageReport["days"][number];
export type UsageGroup = UsageReport["groups"][number];
export type BudgetList = JsonOf<V1<"/budgets">, "get", 200>;
export type Budget = BudgetList["budgets"][number];
export type UsageScope = "own" | "org";
export type UsageGroupBy = "user" | "model" | "sandbox";
export type BudgetScope = "org" | "user" | "sandbox";
export interface UsageQuery {
  scope: UsageScope;
  groupBy?: UsageGroupBy;
  /** a date (`YYYY-MM-DD`, UTC) or an RFC 3339 time */
  since?: string;
}
/** Share links (docs/shares.md): made, listed and revoked by the owner. */
export type ShareCreated = JsonOf<V1<"/sessions/{id}/shares">, "post", 201>;
export type Share = JsonOf<V1<"/sessions/{id}/shares">, "get", 200>["shares"][number];
export type ShareMode = "read" | "write";
/** What a share link opens, for the spectator's page. */
export type SharedSandbox = JsonOf<V1<"/shared/{id}">, "get", 200>;
/** Agent activity (docs/activity.md); a list item carries it once the server reports it. */
export type ActivityState = "busy" | "waiting" | "idle";
/** `GET …/terminals` lists what `POST …/terminals` answers (its schema is not declared). */
export type TerminalListItem = TerminalItem;

/** An install state from the server (the schema says string, with this pattern). */
export function installState(value: string): InstallState {
  return value === "running" || value === "succeeded" || value === "failed" ? value : "idle";
}

/** A non-2xx answer; `message` is what the console shows the user. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string | undefined;

  constructor(status: number, body: unknown) {
    super(errorMessage(status, body));
    this.name = "ApiError";
    this.status = status;
    this.code = isRecord(body) && typeof body.error === "string" ? body.error : undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function nonBlank(value: unknown): value is string {
  return typeof value === "string" && value.trim() !== "";
}

/** The error envelope rule: `detail`, else `error`, else `HTTP <code>`. */
/** The session line of the landing list and the session header: `agent · repo · STATUS`
 * (`no repo` when none was asked for, so the three parts always read the same way). */
export function sessionMeta(item: { agent: string; repo?: string | null; status: string }): string {
  return [item.agent, item.repo || "no repo", item.status.toUpperCase()].join(" · ");
}

export function errorMessage(status: number, body: unknown): string {
  if (isRecord(body)) {
    if (nonBlank(body.detail)) return body.detail;
    if (nonBlank(body.error)) return body.error;
  }
  return `HTTP ${status}`;
}

export interface ApiOptions {
  /** Defaults to the page origin; tests pass their own. */
  baseUrl?: string;
  fetch?: (input: Request) => Promise<Response>;
  /** Called on any 401 so the app can show the sign-in page. */
  onUnauthenticated?: () => void;
}

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

export type Api = ReturnType<typeof createApi>;

export function createApi(options: ApiOptions = {}) {
  const baseUrl = options.baseUrl ?? window.location.origin;
  const client = createClient<paths>({
    baseUrl,
    credentials: "same-origin",
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });

  function settle<T>(outcome: Outcome<T>): T {
    const { response } = outcome;
    if (!response.ok) {
      if (response.status === 401) options.onUnauthenticated?.();
      throw new ApiError(response.status, outcome.error);
    }
    return outcome.data as T;
  }

  function settleEmpty(outcome: Outcome<unknown>): void {
    settle(outcome);
  }

  const sid = (id: string) => ({ params: { path: { id } } });
  return {
    listSessions: async () =>
      settle(await client.GET("/api/v1/sandbox/sessions")).sandboxes,
    createSession: async (body: CreateSessionRequest) =>
      settle(await client.POST("/api/v1/sandbox/sessions", { body })),
    getSession: async (id: string) =>
      settle(await client.GET("/api/v1/sandbox/sessions/{id}", sid(id))),
    deleteSession: async (id: string) =>
      settleEmpty(await client.DELETE("/api/v1/sandbox/sessions/{id}", sid(id))),
    resizeSession: async (id: string, size: { rows: number; cols: number }) =>
      settleEmpty(
        await client.POST("/api/v1/sandbox/sessions/{id}/resize", { ...sid(id), body: size }),
      ),
    createTerminal: async (id: string, agent: string) =>
      settle(
        await client.POST("/api/v1/sandbox/sessions/{id}/terminals", {
          ...sid(id),
          body: { agent },
        }),
      ),
    resizeTerminal: async (id: string, tid: string, size: { rows: number; cols: number }) =>
      settleEmpty(
        await client.POST("/api/v1/sandbox/sessions/{id}/terminals/{tid}/resize", {
          params: { path: { id, tid } },
          body: size,
        }),
      ),
    listTerminals: async (id: string) =>
      (settle(await client.GET("/api/v1/sandbox/sessions/{id}/terminals", sid(id))) as {
        terminals: TerminalListItem[];
      }).terminals,
    closeTerminal: async (id: string, tid: string) =>
      settleEmpty(
        await client.DELETE("/api/v1/sandbox/sessions/{id}/terminals/{tid}", {
          params: { path: { id, tid } },
        }),
      ),
    createShare: async (id: string, body: { mode: ShareMode; ttlSeconds: number }) =>
      settle(await client.POST("/api/v1/sandbox/sessions/{id}/shares", { ...sid(id), body })),
    listShares: async (id: string) =>
      settle(await client.GET("/api/v1/sandbox/sessions/{id}/shares", sid(id))).shares,
    revokeShare: async (id: string, shareId: string) =>
      settleEmpty(
        await client.DELETE("/api/v1/sandbox/sessions/{id}/shares/{shareId}", {
          params: { path: { id, shareId } },
        }),
      ),
    getShared: async (id: string, share: string) =>
      settle(
        await client.GET("/api/v1/sandbox/shared/{id}", {
          params: { path: { id }, query: { share } },
        }),
      ),
    listAgents: async () => settle(await client.GET("/api/v1/sandbox/agents")).agents,
    installAgent: async (slug: string) =>
      settle(
        await client.POST("/api/v1/sandbox/agents/{slug}/install", {
          params: { path: { slug } },
          body: {},
        }),
      ),
    installStatus: async (slug: string) =>
      settle(
        await client.GET("/api/v1/sandbox/agents/{slug}/install", { params: { path: { slug } } }),
      ),
    createLoginLink: async (next: string) =>
      settle(await client.POST("/api/v1/sandbox/login-links", { body: { next } })),
    whoami: async () => settle(await client.GET("/api/v1/sandbox/whoami")),
    authConfig: async () => settle(await client.GET("/api/v1/sandbox/auth/config")),
    byosConfig: async () => settle(await client.GET("/api/v1/sandbox/byos/claude-code/config")),
    byosStatus: async () => settle(await client.GET("/api/v1/sandbox/byos/claude-code/status")),
    byosStart: async (postConnectRedirect: string) =>
      settle(
        await client.POST("/api/v1/sandbox/byos/claude-code/start", {
          body: { post_connect_redirect: postConnectRedirect },
        }),
      ),
    byosDisconnect: async () =>
      settleEmpty(await client.DELETE("/api/v1/sandbox/byos/claude-code")),
    /** Signs out here; answers the identity provider's end-session URL when the session
     * was an OIDC sign-in and the provider offers RP-initiated logout, else null. */
    logout: async (): Promise<string | null> => {
      const outcome = await client.POST("/logout");
      settleEmpty(outcome);
      const body: unknown = outcome.data;
      if (body && typeof body === "object" && "logoutUrl" in body) {
        const url = (body as { logoutUrl: unknown }).logoutUrl;
        return typeof url === "string" && /^https?:\/\//.test(url) ? url : null;
      }
      return null;
    },
    usage: async (query: UsageQuery) =>
      settle(await client.GET("/api/v1/sandbox/usage", { params: { query: { ...query } } })),
    listBudgets: async () => settle(await client.GET("/api/v1/sandbox/budgets")),
    getBudget: async (scope: BudgetScope, name: string) =>
      settle(
        await client.GET("/api/v1/sandbox/budgets/{scope}/{name}", {
          params: { path: { scope, name } },
        }),
      ),
    /** `monthlyUsd`: USD as a number or the text typed (`"12.50"`); `null` is "no cap". */
    setBudget: async (scope: BudgetScope, name: string, monthlyUsd: number | string | null) =>
      settle(
        await client.PUT("/api/v1/sandbox/budgets/{scope}/{name}", {
          params: { path: { scope, name } },
          body: { monthlyUsd },
        }),
      ),
    /** Back to the operator's default; answers the budget as it now stands. */
    resetBudget: async (scope: BudgetScope, name: string) =>
      settle(
        await client.DELETE("/api/v1/sandbox/budgets/{scope}/{name}", {
          params: { path: { scope, name } },
        }),
      ),
  };
}
