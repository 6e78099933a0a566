import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useEffect } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "../App";
import { FakeServer } from "../test/fakeServer";
import { item, renderWithApi } from "../test/render";
import type { Control } from "../terminal/protocol";
import { SessionPage } from "./SessionPage";

// The terminal is tested on its own: a stand-in that hands the test its control channel
// and shows what the page asked of it.
const terminals: { attachUrl: string; readOnly: boolean; onControl?: (c: Control) => void }[] = [];
vi.mock("../terminal/TerminalView", () => ({
  default: function StandIn(props: {
    attachUrl: string;
    readOnly?: boolean;
    onControl?: (c: Control) => void;
  }) {
    useEffect(() => {
      terminals.push({ attachUrl: props.attachUrl, readOnly: props.readOnly === true, onControl: props.onControl });
    }, [props.attachUrl, props.readOnly, props.onControl]);
    return <div data-testid="terminal-stand-in" />;
  },
}));

const PATH = "/api/v1/sandbox/sessions/box";
const SHARES = `${PATH}/shares`;

afterEach(() => {
  terminals.length = 0;
  vi.unstubAllGlobals();
  Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
});

function running() {
  return new FakeServer()
    .on("GET", PATH, { status: 200, body: item("box", { name: "fix-tests", phase: "Ready", status: "running" }) })
    .on("GET", `${PATH}/terminals`, { status: 200, body: { terminals: [] } });
}

const hello = (activity: string): Control =>
  ({ type: "hello", viewer: "v", mode: "write", rows: 24, cols: 80, window: 1 << 20, activity, title: "" }) as Control;

describe("SessionPage activity and presence", () => {
  it("leads the tab title with the activity and notifies once when it starts waiting unseen", async () => {
    const made: string[] = [];
    class FakeNotification {
      static permission = "granted";
      onclick: (() => void) | null = null;
      constructor(title: string) {
        made.push(title);
      }
      close() {}
    }
    vi.stubGlobal("Notification", FakeNotification);
    renderWithApi(<SessionPage id="box" />, running());
    await screen.findByTestId("terminal-stand-in");
    await waitFor(() => expect(terminals.at(-1)?.onControl).toBeDefined());
    const send = (c: Control) => act(() => terminals.at(-1)!.onControl!(c));
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    // a reload of a session that is already waiting is not news
    send(hello("waiting"));
    expect(document.title).toBe("● waiting — fix-tests · OpenOva Sandbox");
    expect(made).toEqual([]);
    send({ type: "activity", state: "busy" });
    expect(document.title).toBe("◐ busy — fix-tests · OpenOva Sandbox");
    expect(screen.getByTestId("activity")).toHaveAttribute("data-state", "busy");
    send({ type: "activity", state: "waiting" });
    send({ type: "activity", state: "waiting" });
    expect(made).toEqual(["fix-tests is waiting for input"]);
    expect(screen.getByTestId("activity")).toHaveTextContent("waiting for input");
    // in view, the title says it: no notification
    Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
    send({ type: "activity", state: "busy" });
    send({ type: "activity", state: "waiting" });
    expect(made).toHaveLength(1);
  });

  it("shows who is watching as initials, spectators marked view only", async () => {
    renderWithApi(<SessionPage id="box" />, running());
    await waitFor(() => expect(terminals.at(-1)?.onControl).toBeDefined());
    act(() =>
      terminals.at(-1)!.onControl!({
        type: "viewers",
        viewers: [
          { id: "1", who: "ann.lee@acme.test", mode: "write", you: true },
          { id: "2", who: "bob@acme.test", mode: "read", you: false },
        ],
      }),
    );
    const presence = screen.getByRole("group", { name: "Watching this session" });
    expect(within(presence).getByLabelText("ann.lee@acme.test (you)")).toHaveTextContent("AL");
    expect(within(presence).getByLabelText("bob@acme.test, view only")).toHaveTextContent("B");
    expect(presence).toHaveTextContent("1 other watching");
  });
});

describe("Share dialog", () => {
  it("makes a link with the chosen access and expiry, lists it and revokes it", async () => {
    const user = userEvent.setup();
    let listed: unknown[] = [];
    const made = {
      id: "s1",
      mode: "write",
      expiresAt: "2026-12-07T10:00:00Z",
      createdAt: "2026-12-06T10:00:00Z",
      createdBy: "ann@acme.test",
      token: "tok",
      url: "http://console.test/sandbox/box?share=tok",
    };
    const s = running()
      .on("GET", SHARES, () => ({ status: 200, body: { shares: listed } }))
      .on("POST", SHARES, () => {
        const { token: _t, url: _u, ...row } = made;
        listed = [row];
        return { status: 201, body: made };
      })
      .on("DELETE", `${SHARES}/s1`, () => {
        listed = [];
        return { status: 204 };
      });
    renderWithApi(<SessionPage id="box" />, s);
    await user.click(await screen.findByRole("button", { name: "Share" }));
    const dialog = screen.getByRole("dialog", { name: "Share this session" });
    expect(await within(dialog).findByText("No active links.")).toBeInTheDocument();
    await user.click(within(dialog).getByLabelText("Can type"));
    await user.selectOptions(within(dialog).getByLabelText("Expires after"), "1 day");
    await user.click(within(dialog).getByRole("button", { name: "Create link" }));
    expect(await within(dialog).findByDisplayValue(made.url)).toBeInTheDocument();
    expect(s.callsTo("POST", SHARES)[0]?.body).toEqual({ mode: "write", ttlSeconds: 86_400 });
    const list = await within(dialog).findByRole("list", { name: "Active links" });
    expect(list).toHaveTextContent("Can type");
    await user.click(within(list).getByRole("button", { name: /^Revoke/ }));
    expect(await within(dialog).findByText("No active links.")).toBeInTheDocument();
    expect(s.callsTo("DELETE", `${SHARES}/s1`)).toHaveLength(1);
    // the token is shown once; a revoked link's is gone
    expect(within(dialog).queryByDisplayValue(made.url)).toBeNull();
  });
});

describe("a share link's page", () => {
  function signedIn() {
    return new FakeServer().on("GET", "/api/v1/sandbox/whoami", {
      status: 200,
      body: { sub: "u2", email: "bob@acme.test", org: "acme", orgAdmin: false },
    });
  }

  it("attaches with the token, read-only, with a view only badge", async () => {
    window.history.replaceState(null, "", "/sandbox/box?share=tok%2F1");
    const s = signedIn().on("GET", "/api/v1/sandbox/shared/box", {
      status: 200,
      body: { id: "box", name: "fix-tests", agent: "aider", owner: "ann@acme.test", mode: "read", expiresAt: "2026-12-07T10:00:00Z" },
    });
    render(<App api={s.api()} />);
    expect(await screen.findByTestId("view-only")).toHaveTextContent("view only");
    expect(screen.getByText(/shared by ann@acme.test/)).toBeInTheDocument();
    await waitFor(() => expect(terminals.at(-1)).toBeDefined());
    expect(terminals.at(-1)).toMatchObject({
      attachUrl: "/api/v1/sandbox/sessions/box/attach?share=tok%2F1",
      readOnly: true,
    });
    expect(s.callsTo("GET", "/api/v1/sandbox/shared/box")[0]?.query).toBe("share=tok%2F1");
    // the owner's page is never asked for: a spectator may not read the item
    expect(s.callsTo("GET", PATH)).toEqual([]);
  });

  it("says a link that no longer works is not valid, without a terminal", async () => {
    window.history.replaceState(null, "", "/sandbox/box?share=gone");
    const s = signedIn().on("GET", "/api/v1/sandbox/shared/box", {
      status: 404,
      body: { error: "share-not-found" },
    });
    render(<App api={s.api()} />);
    expect(await screen.findByRole("alert")).toHaveTextContent(/revoked, it expired/);
    expect(screen.queryByTestId("terminal-stand-in")).toBeNull();
  });
});
