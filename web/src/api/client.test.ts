import { describe, expect, it } from "vitest";
import { ApiError, errorMessage } from "./client";
import { FakeServer } from "../test/fakeServer";

describe("errorMessage", () => {
  it("prefers detail, then error, then the status code", () => {
    expect(errorMessage(409, { error: "sandbox-already-exists", detail: "sandbox \"x\" already exists" })).toBe(
      'sandbox "x" already exists',
    );
    expect(errorMessage(401, { error: "unauthenticated" })).toBe("unauthenticated");
    expect(errorMessage(502, "<html>bad gateway</html>")).toBe("HTTP 502");
    expect(errorMessage(500, { error: "", detail: "  " })).toBe("HTTP 500");
    expect(errorMessage(503, null)).toBe("HTTP 503");
  });
});

describe("typed client", () => {
  it("sends the create body and returns the item", async () => {
    const server = new FakeServer().on("POST", "/api/v1/sandbox/sessions", ({ body }) => ({
      status: 201,
      body: { ...(body as object), id: "my-box", status: "pending" },
    }));
    const item = await server.api().createSession({ agent: "aider", name: "My Box", repo: "acme/site" });
    expect(item.id).toBe("my-box");
    expect(server.calls).toEqual([
      {
        method: "POST",
        path: "/api/v1/sandbox/sessions",
        body: { agent: "aider", name: "My Box", repo: "acme/site" },
      },
    ]);
  });

  it("throws ApiError with the server's detail and code", async () => {
    const server = new FakeServer().on("POST", "/api/v1/sandbox/sessions", {
      status: 409,
      body: { error: "sandbox-already-exists", detail: 'sandbox "aider-u" already exists in namespace "acme"' },
    });
    const err = await server.api().createSession({ agent: "aider" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(409);
    expect((err as ApiError).code).toBe("sandbox-already-exists");
    expect((err as ApiError).message).toBe('sandbox "aider-u" already exists in namespace "acme"');
  });

  it("reports a 401 to the app and unwraps list envelopes", async () => {
    const server = new FakeServer()
      .on("GET", "/api/v1/sandbox/sessions", { status: 401, body: { error: "unauthenticated" } })
      .on("GET", "/api/v1/sandbox/agents", {
        status: 200,
        body: { agents: [{ id: "aider", label: "Aider", blurb: "b", installed: true, installHint: "", byos: false }] },
      });
    const api = server.api();
    await expect(api.listSessions()).rejects.toMatchObject({ status: 401, message: "unauthenticated" });
    expect(server.unauthenticated).toBe(1);
    expect((await api.listAgents()).map((a) => a.id)).toEqual(["aider"]);
  });

  it("uses the exact paths for resize, rescue terminals and BYOS", async () => {
    const server = new FakeServer()
      .on("POST", "/api/v1/sandbox/sessions/box-1/resize", { status: 204 })
      .on("POST", "/api/v1/sandbox/sessions/box-1/terminals", {
        status: 201,
        body: { id: "ab12", agent: "sovereign-shell", attachUrl: "/api/v1/sandbox/sessions/box-1/terminals/ab12/attach" },
      })
      .on("POST", "/api/v1/sandbox/sessions/box-1/terminals/ab12/resize", { status: 204 })
      .on("POST", "/api/v1/sandbox/byos/claude-code/start", {
        status: 200,
        body: { authorization_url: "https://idp/a", authorizeUrl: "https://idp/a", state: "s" },
      })
      .on("DELETE", "/api/v1/sandbox/byos/claude-code", { status: 204 })
      .on("DELETE", "/api/v1/sandbox/sessions/box-1", { status: 204 });
    const api = server.api();
    await api.resizeSession("box-1", { rows: 30, cols: 100 });
    const term = await api.createTerminal("box-1", "sovereign-shell");
    await api.resizeTerminal("box-1", term.id, { rows: 10, cols: 40 });
    expect((await api.byosStart("/sandbox/settings")).authorizeUrl).toBe("https://idp/a");
    await api.byosDisconnect();
    await api.deleteSession("box-1");
    expect(server.calls.map((c) => [c.method, c.path, c.body])).toEqual([
      ["POST", "/api/v1/sandbox/sessions/box-1/resize", { rows: 30, cols: 100 }],
      ["POST", "/api/v1/sandbox/sessions/box-1/terminals", { agent: "sovereign-shell" }],
      ["POST", "/api/v1/sandbox/sessions/box-1/terminals/ab12/resize", { rows: 10, cols: 40 }],
      ["POST", "/api/v1/sandbox/byos/claude-code/start", { post_connect_redirect: "/sandbox/settings" }],
      ["DELETE", "/api/v1/sandbox/byos/claude-code", undefined],
      ["DELETE", "/api/v1/sandbox/sessions/box-1", undefined],
    ]);
  });

  it("escapes ids in paths", async () => {
    const server = new FakeServer();
    await server.api().getSession("a/b").catch(() => undefined);
    expect(server.calls[0]?.path).toBe("/api/v1/sandbox/sessions/a%2Fb");
  });

  it("uses the exact paths for agent installs, the terminal list and login links", async () => {
    const server = new FakeServer()
      .on("POST", "/api/v1/sandbox/agents/opencode/install", {
        status: 202,
        body: { slug: "opencode", state: "running" },
      })
      .on("GET", "/api/v1/sandbox/agents/opencode/install", {
        status: 200,
        body: { slug: "opencode", state: "running", log: ["a"], error: null, version: null },
      })
      .on("GET", "/api/v1/sandbox/sessions/box-1/terminals", {
        status: 200,
        body: { terminals: [{ id: "t1", agent: "sovereign-shell", attachUrl: "/x" }] },
      })
      .on("DELETE", "/api/v1/sandbox/sessions/box-1/terminals/t1", { status: 204 })
      .on("POST", "/api/v1/sandbox/login-links", {
        status: 201,
        body: { url: "http://h/login?token=t", expiresAt: "2026-01-01T00:10:00Z", qrSvg: "<svg/>" },
      });
    const api = server.api();
    expect((await api.installAgent("opencode")).state).toBe("running");
    expect((await api.installStatus("opencode")).log).toEqual(["a"]);
    expect((await api.listTerminals("box-1")).map((t) => t.id)).toEqual(["t1"]);
    await api.closeTerminal("box-1", "t1");
    expect((await api.createLoginLink("/sandbox/box-1")).url).toBe("http://h/login?token=t");
    expect(server.calls.map((c) => [c.method, c.path, c.body])).toEqual([
      ["POST", "/api/v1/sandbox/agents/opencode/install", {}],
      ["GET", "/api/v1/sandbox/agents/opencode/install", undefined],
      ["GET", "/api/v1/sandbox/sessions/box-1/terminals", undefined],
      ["DELETE", "/api/v1/sandbox/sessions/box-1/terminals/t1", undefined],
      ["POST", "/api/v1/sandbox/login-links", { next: "/sandbox/box-1" }],
    ]);
    const err = await new FakeServer()
      .on("POST", "/api/v1/sandbox/agents/x/install", {
        status: 409,
        body: { error: "install-running", detail: "x is being installed" },
      })
      .api()
      .installAgent("x")
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 409, code: "install-running", message: "x is being installed" });
  });

  it("asks for usage with its query and names budgets by scope and encoded name", async () => {
    const answer = { status: 200, body: {} };
    const server = new FakeServer()
      .on("GET", "/api/v1/sandbox/usage", answer)
      .on("GET", "/api/v1/sandbox/budgets", answer)
      .on("GET", "/api/v1/sandbox/budgets/sandbox/box", answer)
      .on("PUT", "/api/v1/sandbox/budgets/user/dev%40acme.com", answer)
      .on("DELETE", "/api/v1/sandbox/budgets/org/acme", answer);
    const api = server.api();
    await api.usage({ scope: "org", groupBy: "model", since: "2026-11-07" });
    await api.usage({ scope: "own" });
    await api.listBudgets();
    await api.getBudget("sandbox", "box");
    await api.setBudget("user", "dev@acme.com", "12.50");
    await api.resetBudget("org", "acme");
    expect(server.calls).toEqual([
      { method: "GET", path: "/api/v1/sandbox/usage", body: undefined, query: "scope=org&groupBy=model&since=2026-11-07" },
      { method: "GET", path: "/api/v1/sandbox/usage", body: undefined, query: "scope=own" },
      { method: "GET", path: "/api/v1/sandbox/budgets", body: undefined },
      { method: "GET", path: "/api/v1/sandbox/budgets/sandbox/box", body: undefined },
      { method: "PUT", path: "/api/v1/sandbox/budgets/user/dev%40acme.com", body: { monthlyUsd: "12.50" } },
      { method: "DELETE", path: "/api/v1/sandbox/budgets/org/acme", body: undefined },
    ]);
  });
});
