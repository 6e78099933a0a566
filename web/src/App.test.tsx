import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { signInUrl } from "./pages/SignIn";
import { FakeServer } from "./test/fakeServer";
import { usageReport } from "./test/render";

describe("App sign-in gate", () => {
  it("shows the sign-in page on 401 with the identity provider's Sign in", async () => {
    window.history.replaceState(null, "", "/sandbox");
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/whoami", { status: 401, body: { error: "unauthenticated" } })
      .on("GET", "/api/v1/sandbox/auth/config", {
        status: 200,
        body: { oidcConfigured: true, issuer: "https://id.acme.test" },
      });
    render(<App api={s.api()} />);
    expect(await screen.findByRole("heading", { name: "Sign in to OpenOva Sandbox" })).toBeInTheDocument();
    const signIn = await screen.findByRole("button", { name: "Sign in" });
    expect(signIn).toBeEnabled();
    expect(signIn).toHaveAccessibleDescription(/https:\/\/id.acme.test/);
    // the embedded issuer's instructions do not apply with an identity provider
    expect(screen.queryByText(/printed it when the server started/)).toBeNull();
  });

  it("explains the login link when the server has no identity provider", async () => {
    window.history.replaceState(null, "", "/sandbox");
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/whoami", { status: 401, body: { error: "unauthenticated" } })
      .on("GET", "/api/v1/sandbox/auth/config", { status: 200, body: { oidcConfigured: false, issuer: "" } });
    render(<App api={s.api()} />);
    expect(await screen.findByText(/printed it when the server started/)).toBeInTheDocument();
    expect(screen.getByText(/^sandbox token --sub <id> --email <you@org> --org <org>$/)).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Sign in" })).toBeNull();
  });

  it("Sign in goes to the server's OIDC sign-in, coming back to this page", () => {
    window.history.replaceState(null, "", "/sandbox/s1?tab=2");
    expect(signInUrl()).toBe("/auth/oidc/start?next=%2Fsandbox%2Fs1%3Ftab%3D2");
    window.history.replaceState(null, "", "/elsewhere");
    expect(signInUrl()).toBe("/auth/oidc/start?next=%2Fsandbox");
  });

  it("shows the caller's email in the header when signed in", async () => {
    window.history.replaceState(null, "", "/sandbox/settings");
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/whoami", {
        status: 200,
        body: { sub: "u1", email: "dev@acme.test", org: "acme", orgAdmin: false },
      })
      .on("GET", "/api/v1/sandbox/byos/claude-code/config", { status: 200, body: { clientIdConfigured: false } })
      .on("GET", "/api/v1/sandbox/byos/claude-code/status", { status: 200, body: { connected: false } });
    render(<App api={s.api()} />);
    expect(await screen.findByTestId("whoami-email")).toHaveTextContent("dev@acme.test");
    expect(screen.getByRole("heading", { name: "Settings" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Settings" })).toHaveAttribute("aria-current", "page");
  });

  it("signs out from Settings and shows the sign-in page", async () => {
    const user = userEvent.setup();
    window.history.replaceState(null, "", "/sandbox/settings");
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/whoami", {
        status: 200,
        body: { sub: "u1", email: "dev@acme.test", org: "acme", orgAdmin: false },
      })
      .on("GET", "/api/v1/sandbox/auth/config", { status: 200, body: { oidcConfigured: false, issuer: "" } })
      .on("GET", "/api/v1/sandbox/byos/claude-code/config", { status: 200, body: { clientIdConfigured: false } })
      .on("GET", "/api/v1/sandbox/byos/claude-code/status", { status: 200, body: { connected: false } })
      .on("POST", "/logout", { status: 204 });
    render(<App api={s.api()} />);
    expect(await screen.findByText("dev@acme.test", { selector: "strong" })).toBeInTheDocument();
    expect(document.title).toBe("Settings · OpenOva Sandbox");
    await user.click(screen.getByRole("button", { name: "Sign out" }));
    expect(await screen.findByRole("heading", { name: "Sign in to OpenOva Sandbox" })).toBeInTheDocument();
    expect(s.callsTo("POST", "/logout")).toHaveLength(1);
    expect(screen.queryByRole("button", { name: "Sign in" })).toBeNull();
  });

  it.each([
    [true, "Model usage of acme", "scope=org"],
    [false, "Your model usage", "scope=own"],
  ])("links the usage page from the header for org admins only (admin: %s)", async (orgAdmin, heading, scope) => {
    window.history.replaceState(null, "", "/sandbox/usage");
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/whoami", {
        status: 200,
        body: { sub: "u1", email: "dev@acme.test", org: "acme", orgAdmin },
      })
      .on("GET", "/api/v1/sandbox/usage", { status: 200, body: usageReport({ scope: scope.slice(6) }) })
      .on("GET", "/api/v1/sandbox/budgets", {
        status: 200,
        body: { month: "2026-12", currency: "USD", defaults: { org: null, user: null, sandbox: null }, budgets: [] },
      });
    render(<App api={s.api()} />);
    expect(await screen.findByRole("heading", { name: heading })).toBeInTheDocument();
    expect(document.title).toBe("Usage · OpenOva Sandbox");
    // the heading is up before the page's first request has gone out (a busy machine)
    await waitFor(() => expect(s.callsTo("GET", "/api/v1/sandbox/usage")).not.toHaveLength(0));
    expect(s.callsTo("GET", "/api/v1/sandbox/usage")[0]!.query).toMatch(new RegExp(`^${scope}&`));
    const nav = screen.getByRole("navigation", { name: "Main" });
    const link = within(nav).queryByRole("link", { name: "Usage" });
    if (orgAdmin) expect(link).toHaveAttribute("aria-current", "page");
    else expect(link).toBeNull();
  });
});
