import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { act } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { agent, item, renderWithApi } from "../test/render";
import { INSTALL_POLL_MS, Landing } from "./Landing";

const AGENTS = [
  agent("aider"),
  agent("claude-code"),
  agent("opencode", { installed: false, installHint: "npm i -g opencode-ai" }),
];

function server(sessions: unknown = { status: 200, body: { sandboxes: [] } }) {
  return new FakeServer()
    .on("GET", "/api/v1/sandbox/agents", { status: 200, body: { agents: AGENTS } })
    .on("GET", "/api/v1/sandbox/sessions", sessions as never);
}

beforeEach(() => {
  window.history.replaceState(null, "", "/sandbox");
});
afterEach(() => {
  vi.useRealTimers();
});

/** A catalogue row as the install-aware server sends it (plan-issue8.md). */
function row(id: string, overrides: Record<string, unknown> = {}) {
  return agent(id, {
    kind: "agent",
    version: null,
    source: "builtin",
    path: null,
    missing: [],
    installable: true,
    manualInstall: null,
    canInstall: true,
    install: null,
    ...overrides,
  });
}

const SHELL = row("shell", { label: "Shell", kind: "shell", installed: true, installable: false });

function fresh(agents: unknown[]) {
  return new FakeServer()
    .on("GET", "/api/v1/sandbox/agents", { status: 200, body: { agents } })
    .on("GET", "/api/v1/sandbox/sessions", { status: 200, body: { sandboxes: [] } });
}

function cardIds() {
  return screen
    .getAllByTestId(/^sandbox-agent-card-/)
    .map((el) => el.getAttribute("data-testid")!.replace("sandbox-agent-card-", ""));
}

describe("Landing", () => {
  it("shows one card per agent with id, blurb and the install hint on a disabled button", async () => {
    renderWithApi(<Landing />, server());
    const aider = await screen.findByTestId("sandbox-agent-card-aider");
    expect(within(aider).getByText("aider", { selector: "code" })).toBeInTheDocument();
    expect(within(aider).getByText("aider blurb")).toBeInTheDocument();
    expect(within(aider).getByRole("button", { name: "Start session" })).toBeEnabled();

    const opencode = screen.getByTestId("sandbox-agent-card-opencode");
    const button = within(opencode).getByRole("button", { name: "Start session" });
    expect(button).toBeDisabled();
    expect(button).toHaveAccessibleDescription(/npm i -g opencode-ai/);

    const claude = screen.getByTestId("sandbox-agent-card-claude-code");
    expect(within(claude).getByRole("link", { name: "Connect Claude Max" })).toHaveAttribute(
      "href",
      "/sandbox/settings",
    );
    expect(within(aider).queryByRole("link", { name: "Connect Claude Max" })).toBeNull();
  });

  it("shows the empty state and the persistence note", async () => {
    renderWithApi(<Landing />, server());
    expect(
      await screen.findByText("No sandbox sessions yet. Pick an agent above to start one."),
    ).toBeInTheDocument();
    expect(screen.getByText(/keep running when you close the tab/)).toBeInTheDocument();
    expect(screen.queryByText("API pending")).toBeNull();
  });

  it("lists recent sessions with agent · repo · STATUS and an attach link", async () => {
    const s = server({
      status: 200,
      body: { sandboxes: [item("site-work", { name: "Site work", repo: "acme/site", status: "running" })] },
    });
    renderWithApi(<Landing />, s);
    const row = await screen.findByTestId("sandbox-session-site-work");
    expect(within(row).getByText("Site work")).toBeInTheDocument();
    expect(within(row).getByText("aider · acme/site · RUNNING")).toBeInTheDocument();
    expect(within(row).getByRole("link", { name: /Attach to Site work/ })).toHaveAttribute(
      "href",
      "/sandbox/site-work",
    );
  });

  it("says 'no repo' in the session line of a sandbox without one", async () => {
    const s = server({ status: 200, body: { sandboxes: [item("bare", { status: "pending" })] } });
    renderWithApi(<Landing />, s);
    const row = await screen.findByTestId("sandbox-session-bare");
    expect(within(row).getByText("aider · no repo · PENDING")).toBeInTheDocument();
  });

  it("shows a session's agent activity when the server reports it, and nothing otherwise", async () => {
    const sessions = [
      item("asking", { status: "running", activity: "waiting" }),
      item("working", { status: "running", activity: "busy" }),
      item("quiet", { status: "stopped", activity: null }),
    ];
    renderWithApi(<Landing />, server({ status: 200, body: { sandboxes: sessions } }));
    expect(await screen.findByTestId("session-activity-asking")).toHaveTextContent("waiting for input");
    expect(screen.getByTestId("session-activity-working")).toHaveAttribute("data-state", "busy");
    expect(within(screen.getByTestId("sandbox-session-quiet")).queryByText(/busy|waiting|idle/)).toBeNull();
  });

  it("notifies when a listed session starts waiting while the tab is hidden", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
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
    const hidden = vi.spyOn(document, "hidden", "get").mockReturnValue(true);
    let state = "waiting";
    const s = server().on("GET", "/api/v1/sandbox/sessions", () => ({
      status: 200,
      body: { sandboxes: [item("fixer", { status: "running", activity: state })] },
    }));
    try {
      renderWithApi(<Landing />, s);
      // already waiting when the page loads: not news
      expect(await screen.findByTestId("session-activity-fixer")).toHaveAttribute("data-state", "waiting");
      state = "busy";
      await act(async () => {
        await vi.advanceTimersByTimeAsync(5000);
      });
      await waitFor(() => expect(screen.getByTestId("session-activity-fixer")).toHaveAttribute("data-state", "busy"));
      state = "waiting";
      await act(async () => {
        await vi.advanceTimersByTimeAsync(5000);
      });
      await waitFor(() => expect(made).toEqual(["fixer is waiting for input"]));
      await act(async () => {
        await vi.advanceTimersByTimeAsync(5000);
      });
      expect(made).toHaveLength(1);
    } finally {
      hidden.mockRestore();
      vi.unstubAllGlobals();
    }
  });

  it("shows each session's spend of the last 30 days, and nothing without a ledger", async () => {
    const s = server({
      status: 200,
      body: {
        sandboxes: [
          item("spender", {
            status: "running",
            usage30d: { inputTokens: 51_200, outputTokens: 8_800, costUsd: 1.3 },
            spend30d: "USD 1.30",
          }),
          item("idle", { status: "running", usage30d: { inputTokens: 0, outputTokens: 0, costUsd: 0 } }),
          item("old-server", { status: "running" }),
        ],
      },
    });
    renderWithApi(<Landing />, s);
    const spender = await screen.findByTestId("sandbox-session-spender");
    expect(within(spender).getByTestId("session-spend-spender")).toHaveTextContent(
      "Spend, last 30 days: $1.30 · 51.2k in / 8.8k out tokens",
    );
    expect(screen.getByTestId("session-spend-idle")).toHaveTextContent("$0.00 · 0 in / 0 out tokens");
    expect(within(screen.getByTestId("sandbox-session-old-server")).queryByText(/Spend/)).toBeNull();
    expect(screen.getByRole("link", { name: "Usage" })).toHaveAttribute("href", "/sandbox/usage");
  });

  it("offers no usage link when no session carries usage (a server without a ledger)", async () => {
    const s = server({ status: 200, body: { sandboxes: [item("a", { status: "running" })] } });
    renderWithApi(<Landing />, s);
    await screen.findByTestId("sandbox-session-a");
    expect(screen.queryByTestId(/^session-spend-/)).toBeNull();
    expect(screen.queryByRole("link", { name: "Usage" })).toBeNull();
  });

  it.each([500, 503])("shows the API pending pill when the list answers %i", async (status) => {
    renderWithApi(<Landing />, server({ status, body: { error: "sandbox-backend-unavailable" } }));
    expect(await screen.findByText("API pending")).toBeInTheDocument();
    expect(screen.queryByText(/No sandbox sessions yet/)).toBeNull();
  });

  it("starts a session: labelled dialog, 409 detail shown, success navigates", async () => {
    const user = userEvent.setup();
    let attempts = 0;
    const s = server().on("POST", "/api/v1/sandbox/sessions", ({ body }) => {
      attempts += 1;
      if (attempts === 1) {
        return {
          status: 409,
          body: {
            error: "sandbox-already-exists",
            detail: 'sandbox "aider-user-sub" already exists in namespace "acme"',
          },
        };
      }
      const name = (body as { name: string }).name;
      return { status: 201, body: item("second-box", { name }) };
    });
    renderWithApi(<Landing />, s);
    const card = await screen.findByTestId("sandbox-agent-card-aider");
    await user.click(within(card).getByRole("button", { name: "Start session" }));

    const dialog = screen.getByRole("dialog", { name: /Start Aider/ });
    const nameInput = within(dialog).getByLabelText("Session name (optional)");
    const repoInput = within(dialog).getByLabelText("Repository (optional)");
    expect(nameInput).toHaveFocus();
    expect(repoInput).toHaveAttribute("placeholder", "org/site");
    expect(repoInput).toHaveAccessibleDescription(
      "Cloned into ./<repo> in the session's workspace, where the terminal starts",
    );

    await user.click(within(dialog).getByRole("button", { name: "Start session" }));
    expect(await within(dialog).findByRole("alert")).toHaveTextContent(
      'sandbox "aider-user-sub" already exists in namespace "acme". Choose another session name.',
    );
    expect(nameInput).toHaveFocus();
    expect(s.callsTo("POST", "/api/v1/sandbox/sessions")[0]?.body).toEqual({ agent: "aider" });

    await user.type(nameInput, "Second box");
    await user.type(repoInput, "acme/site");
    expect(repoInput).toHaveAccessibleDescription(
      "Cloned into ./site in the session's workspace, where the terminal starts",
    );
    await user.click(within(dialog).getByRole("button", { name: "Start session" }));
    await waitFor(() => expect(window.location.pathname).toBe("/sandbox/second-box"));
    expect(s.callsTo("POST", "/api/v1/sandbox/sessions")[1]?.body).toEqual({
      agent: "aider",
      name: "Second box",
      repo: "acme/site",
    });
  });

  it("shows Starting… while pending and closes on Escape", async () => {
    const user = userEvent.setup();
    let release: (a: { status: number; body: unknown }) => void = () => undefined;
    const s = server().on(
      "POST",
      "/api/v1/sandbox/sessions",
      () => new Promise((resolve) => (release = resolve)),
    );
    renderWithApi(<Landing />, s);
    const card = await screen.findByTestId("sandbox-agent-card-aider");
    await user.click(within(card).getByRole("button", { name: "Start session" }));
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Start session" }));
    expect(await screen.findByRole("button", { name: "Starting…" })).toBeDisabled();
    release({ status: 500, body: {} });
    expect(await screen.findByRole("alert")).toHaveTextContent("HTTP 500");
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).toBeNull();
  });
});

describe("Landing on a fresh install", () => {
  it("puts the Shell card first when no agent is installed, and it starts", async () => {
    const user = userEvent.setup();
    const s = fresh([
      row("opencode", { installed: false, missing: ["binary opencode"] }),
      row("aider", { installed: false }),
      SHELL,
    ]).on("POST", "/api/v1/sandbox/sessions", { status: 201, body: item("shell-1", { agent: "shell" }) });
    renderWithApi(<Landing orgAdmin />, s);
    const shell = await screen.findByTestId("sandbox-agent-card-shell");
    expect(cardIds()).toEqual(["shell", "opencode", "aider"]);
    const start = within(shell).getByRole("button", { name: "Start session" });
    expect(start).toBeEnabled();
    for (const id of ["opencode", "aider"]) {
      const card = screen.getByTestId(`sandbox-agent-card-${id}`);
      expect(within(card).getByRole("button", { name: "Start session" })).toBeDisabled();
    }
    await user.click(start);
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Start session" }));
    await waitFor(() => expect(window.location.pathname).toBe("/sandbox/shell-1"));
    expect(s.callsTo("POST", "/api/v1/sandbox/sessions")[0]?.body).toEqual({ agent: "shell" });
  });

  it("lists installed agents first, keeping the catalogue order otherwise", async () => {
    renderWithApi(
      <Landing />,
      fresh([row("opencode", { installed: false }), row("aider"), row("qwen", { installed: false }), SHELL]),
    );
    await screen.findByTestId("sandbox-agent-card-shell");
    expect(cardIds()).toEqual(["aider", "shell", "opencode", "qwen"]);
  });

  it("installs from the card: log lines stream in, then the card can start", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    let installed = false;
    const statuses = [
      { slug: "opencode", state: "running", log: ["checking node"], error: null },
      { slug: "opencode", state: "running", log: ["checking node", "npm install opencode-ai@1.18.33"], error: null },
      {
        slug: "opencode",
        state: "succeeded",
        log: ["checking node", "npm install opencode-ai@1.18.33", "installed opencode 1.18.33"],
        error: null,
        version: "1.18.33",
      },
    ];
    let polls = 0;
    const s = new FakeServer()
      .on("GET", "/api/v1/sandbox/agents", () => ({
        status: 200,
        body: {
          agents: [
            SHELL,
            row("opencode", installed ? { installed: true, version: "1.18.33" } : { installed: false }),
          ],
        },
      }))
      .on("GET", "/api/v1/sandbox/sessions", { status: 200, body: { sandboxes: [] } })
      .on("POST", "/api/v1/sandbox/agents/opencode/install", {
        status: 202,
        body: { slug: "opencode", state: "running" },
      })
      .on("GET", "/api/v1/sandbox/agents/opencode/install", () => {
        const status = statuses[Math.min(polls++, statuses.length - 1)]!;
        if (status.state === "succeeded") installed = true;
        return { status: 200, body: status };
      });
    renderWithApi(<Landing orgAdmin />, s);
    const card = await screen.findByTestId("sandbox-agent-card-opencode");
    expect(within(card).getByRole("button", { name: "Start session" })).toBeDisabled();
    await user.click(within(card).getByRole("button", { name: "Install" }));
    expect(s.callsTo("POST", "/api/v1/sandbox/agents/opencode/install")).toHaveLength(1);
    const log = await within(card).findByRole("log", { name: "Install log of Opencode" });
    await waitFor(() => expect(log).toHaveTextContent("checking node"));
    expect(within(card).queryByRole("button", { name: "Install" })).toBeNull();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(INSTALL_POLL_MS);
    });
    await waitFor(() => expect(log).toHaveTextContent("npm install opencode-ai@1.18.33"));
    await act(async () => {
      await vi.advanceTimersByTimeAsync(INSTALL_POLL_MS);
    });
    await waitFor(() =>
      expect(within(card).getByRole("button", { name: "Start session" })).toBeEnabled(),
    );
    expect(within(card).getByRole("status")).toHaveTextContent("Installed (1.18.33).");
    expect(cardIds()).toEqual(["shell", "opencode"]);
    // polling stopped with the outcome
    const before = polls;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(INSTALL_POLL_MS * 3);
    });
    expect(polls).toBe(before);
  });

  it("follows an install already running (409) and shows a failure with its log", async () => {
    const user = userEvent.setup();
    const s = fresh([SHELL, row("qwen", { installed: false })])
      .on("POST", "/api/v1/sandbox/agents/qwen/install", {
        status: 409,
        body: { error: "install-running", detail: "qwen is being installed" },
      })
      .on("GET", "/api/v1/sandbox/agents/qwen/install", {
        status: 200,
        body: { slug: "qwen", state: "failed", log: ["npm ERR! 404"], error: "npm exited with 1" },
      });
    renderWithApi(<Landing orgAdmin />, s);
    const card = await screen.findByTestId("sandbox-agent-card-qwen");
    await user.click(within(card).getByRole("button", { name: "Install" }));
    expect(await within(card).findByRole("alert")).toHaveTextContent("Install failed: npm exited with 1");
    expect(within(card).getByRole("log")).toHaveTextContent("npm ERR! 404");
    expect(within(card).getByRole("button", { name: "Install again" })).toBeEnabled();
    expect(within(card).getByRole("button", { name: "Start session" })).toBeDisabled();
  });

  it("shows an install that was already running when the page loaded", async () => {
    const s = fresh([
      SHELL,
      row("aider", { installed: false, install: { state: "running", log: ["pip install aider-chat"], error: null } }),
    ]).on("GET", "/api/v1/sandbox/agents/aider/install", {
      status: 200,
      body: { slug: "aider", state: "running", log: ["pip install aider-chat", "collecting"], error: null },
    });
    renderWithApi(<Landing orgAdmin />, s);
    const card = await screen.findByTestId("sandbox-agent-card-aider");
    expect(within(card).queryByRole("button", { name: "Install" })).toBeNull();
    await waitFor(() => expect(within(card).getByRole("log")).toHaveTextContent("collecting"));
  });

  it("shows the manual instructions for an agent the server cannot install", async () => {
    renderWithApi(
      <Landing orgAdmin />,
      fresh([
        SHELL,
        row("cursor-agent", {
          installed: false,
          installable: false,
          canInstall: false,
          manualInstall: "curl https://cursor.com/install -fsS | bash",
        }),
      ]),
    );
    const card = await screen.findByTestId("sandbox-agent-card-cursor-agent");
    expect(within(card).queryByRole("button", { name: "Install" })).toBeNull();
    expect(within(card).getByRole("button", { name: "Start session" })).toHaveAccessibleDescription(
      /curl https:\/\/cursor.com\/install -fsS \| bash/,
    );
  });

  it("tells a non-admin to ask the operator instead of offering Install", async () => {
    renderWithApi(
      <Landing orgAdmin={false} />,
      fresh([SHELL, row("opencode", { installed: false, canInstall: false })]),
    );
    const card = await screen.findByTestId("sandbox-agent-card-opencode");
    expect(within(card).queryByRole("button", { name: "Install" })).toBeNull();
    expect(card).toHaveTextContent("Ask your operator to install it.");
  });

  it("shows the server's refusal of an install (403)", async () => {
    const user = userEvent.setup();
    const s = fresh([SHELL, row("opencode", { installed: false })]).on(
      "POST",
      "/api/v1/sandbox/agents/opencode/install",
      { status: 403, body: { error: "forbidden", detail: "only org admins install agents" } },
    );
    renderWithApi(<Landing />, s);
    const card = await screen.findByTestId("sandbox-agent-card-opencode");
    await user.click(within(card).getByRole("button", { name: "Install" }));
    expect(await within(card).findByRole("alert")).toHaveTextContent("only org admins install agents");
  });

  it("names the variables an installed agent still needs", async () => {
    renderWithApi(
      <Landing />,
      fresh([row("claude-code", { missing: ["ANTHROPIC_API_KEY"] }), SHELL]),
    );
    const card = await screen.findByTestId("sandbox-agent-card-claude-code");
    expect(card).toHaveTextContent("Needs ANTHROPIC_API_KEY on the server.");
  });
});
