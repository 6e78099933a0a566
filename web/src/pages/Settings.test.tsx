import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { renderWithApi } from "../test/render";
import { ClaudeCodeCard } from "./Settings";

const BYOS = "/api/v1/sandbox/byos/claude-code";

describe("Claude Code card", () => {
  it("says operator setup is pending without a client id", async () => {
    const s = new FakeServer()
      .on("GET", `${BYOS}/config`, { status: 200, body: { clientIdConfigured: false } })
      .on("GET", `${BYOS}/status`, { status: 200, body: { connected: false, client_id_pending: true } });
    renderWithApi(<ClaudeCodeCard />, s);
    expect(await screen.findByText("Operator setup pending")).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Connect" })).toBeNull();
  });

  it("connects: starts the flow and goes to the authorize URL", async () => {
    const user = userEvent.setup();
    const redirect = vi.fn();
    const s = new FakeServer()
      .on("GET", `${BYOS}/config`, {
        status: 200,
        body: { clientIdConfigured: true, oauthAuthorizeURL: "https://claude.example/authorize" },
      })
      .on("GET", `${BYOS}/status`, { status: 200, body: { connected: false, status: "disconnected" } })
      .on("POST", `${BYOS}/start`, {
        status: 200,
        body: { authorization_url: "https://claude.example/authorize?x=1", authorizeUrl: "https://claude.example/authorize?x=1", state: "st" },
      });
    renderWithApi(<ClaudeCodeCard redirect={redirect} />, s);
    await user.click(await screen.findByRole("button", { name: "Connect" }));
    await waitFor(() => expect(redirect).toHaveBeenCalledWith("https://claude.example/authorize?x=1"));
    expect(s.callsTo("POST", `${BYOS}/start`)[0]?.body).toEqual({ post_connect_redirect: "/sandbox/settings" });
  });

  it("shows the account when connected and disconnects", async () => {
    const user = userEvent.setup();
    let connected = true;
    const s = new FakeServer()
      .on("GET", `${BYOS}/config`, { status: 200, body: { clientIdConfigured: true } })
      .on("GET", `${BYOS}/status`, () => ({
        status: 200,
        body: connected
          ? { connected: true, status: "connected", accountLabel: "dev@acme.test", connectedAt: "2026-11-27T10:00:00Z" }
          : { connected: false, status: "disconnected" },
      }))
      .on("DELETE", BYOS, () => {
        connected = false;
        return { status: 204 };
      });
    renderWithApi(<ClaudeCodeCard />, s);
    expect(await screen.findByText(/dev@acme.test/)).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Disconnect" }));
    expect(await screen.findByRole("button", { name: "Connect" })).toBeInTheDocument();
    expect(s.callsTo("DELETE", BYOS)).toHaveLength(1);
  });

  it("shows the server's message when starting fails", async () => {
    const user = userEvent.setup();
    const s = new FakeServer()
      .on("GET", `${BYOS}/config`, { status: 200, body: { clientIdConfigured: true } })
      .on("GET", `${BYOS}/status`, { status: 200, body: { connected: false } })
      .on("POST", `${BYOS}/start`, { status: 403, body: { error: "byos disabled by operator policy" } });
    renderWithApi(<ClaudeCodeCard redirect={vi.fn()} />, s);
    await user.click(await screen.findByRole("button", { name: "Connect" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("byos disabled by operator policy");
  });
});
