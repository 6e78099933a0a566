import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { FakeServer } from "../test/fakeServer";
import { agent, item, renderWithApi } from "../test/render";
import { Landing } from "./Landing";

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
    expect(repoInput).toHaveAccessibleDescription("Cloned into /workspace/<name> at start");

    await user.click(within(dialog).getByRole("button", { name: "Start session" }));
    expect(await within(dialog).findByRole("alert")).toHaveTextContent(
      'sandbox "aider-user-sub" already exists in namespace "acme". Choose another session name.',
    );
    expect(nameInput).toHaveFocus();
    expect(s.callsTo("POST", "/api/v1/sandbox/sessions")[0]?.body).toEqual({ agent: "aider" });

    await user.type(nameInput, "Second box");
    await user.type(repoInput, "acme/site");
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
