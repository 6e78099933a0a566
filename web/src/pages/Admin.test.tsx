import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { WhoAmI } from "../api/client";
import type { AuditRecord } from "../admin";
import { createAdminApi } from "../admin/adminApi";
import { FakeServer } from "../test/fakeServer";
import { item, renderWithApi } from "../test/render";
import { AdminPage } from "./Admin";

const ADMIN: WhoAmI = { sub: "u-admin", email: "admin@acme.com", org: "acme", orgAdmin: true };
const DEV: WhoAmI = { sub: "u-dev", email: "dev@acme.com", org: "acme", orgAdmin: false };

function record(seq: number, o: Partial<AuditRecord> = {}): AuditRecord {
  return {
    org: "acme",
    seq,
    at: `2026-12-06T10:00:${String(seq).padStart(2, "0")}.000000Z`,
    actor: { sub: "u-dev", email: "dev@acme.com" },
    action: "sandbox.create",
    target: `sandbox/s${seq}`,
    outcome: "success",
    client: "10.0.0.7",
    detail: { agent: "aider" },
    prev: "0".repeat(64),
    hash: "a".repeat(64),
    ...o,
  };
}

function server() {
  const s = new FakeServer()
    .on("GET", "/api/v1/sandbox/sessions", ({ url }) =>
      url.searchParams.get("scope") === "org"
        ? {
            status: 200,
            body: {
              sandboxes: [
                item("box", { status: "running", sessions: 2, activity: "busy", storageUsed: "1.2Gi", spend30d: "$1.30" }),
                item("other", { status: "running", sessions: 0 }),
              ],
            },
          }
        : { status: 400, body: { error: "test-wants-org-scope" } },
    )
    .on("GET", "/api/v1/sovereigns/local/k8s/sandboxes", ({ url }) => ({
      status: url.searchParams.get("scope") === "org" ? 200 : 400,
      body: {
        kind: "sandbox",
        cluster: "local",
        ageSeconds: 0,
        items: [
          { metadata: { name: "box" }, spec: { owner: { email: "dev@acme.com" } } },
          { metadata: { name: "other" }, spec: { owner: { email: "ops@acme.com" } } },
        ],
      },
    }))
    .on("GET", "/api/v1/sandbox/audit", ({ url }) =>
      url.searchParams.get("cursor") === "2"
        ? { status: 200, body: { items: [record(1)], cursor: null } }
        : {
            status: 200,
            body: {
              items: [record(3, { action: "sandbox.delete", outcome: "denied", detail: { error: "forbidden" } }), record(2)],
              cursor: "2",
            },
          },
    )
    .on("GET", "/api/v1/sandbox/sessions/box/terminals", {
      status: 200,
      body: { terminals: [{ id: "box", agent: "aider", attachUrl: "x" }, { id: "t2", agent: "shell", attachUrl: "y" }] },
    })
    .on("DELETE", "/api/v1/sandbox/sessions/box/terminals/box", { status: 204 })
    .on("DELETE", "/api/v1/sandbox/sessions/box/terminals/t2", { status: 404, body: { error: "terminal-not-found" } })
    .on("DELETE", "/api/v1/sandbox/sessions/other", { status: 204 });
  return s;
}

function page(s: FakeServer, who: WhoAmI = ADMIN) {
  const admin = createAdminApi({ baseUrl: "http://console.test", fetch: s.fetch });
  return renderWithApi(<AdminPage who={who} admin={admin} />, s);
}

describe("the org admin's page", () => {
  it("lists the org's sandboxes by owner with state, activity, terminals, storage and spend", async () => {
    page(server());
    const dev = await screen.findByTestId("admin-owner-dev@acme.com");
    expect(within(dev).getByRole("heading", { level: 3 })).toHaveTextContent("dev@acme.com 1 sandbox, 2 terminals");
    const row = within(dev).getByTestId("admin-row-box");
    expect(within(row).getAllByRole("cell").map((c) => c.textContent)).toEqual([
      "aider",
      "running",
      "busy",
      "2",
      "1.2Gi",
      "$1.30",
      "StopDelete",
    ]);
    const ops = screen.getByTestId("admin-owner-ops@acme.com");
    expect(within(ops).getByRole("button", { name: "Stop other" })).toBeDisabled();
  });

  it("stops a sandbox by ending each of its terminals (one already gone is fine)", async () => {
    const s = server();
    page(s);
    await userEvent.click(await screen.findByRole("button", { name: "Stop box" }));
    const dialog = screen.getByRole("dialog");
    expect(dialog).toHaveTextContent("Ends its 2 terminals");
    await userEvent.click(within(dialog).getByRole("button", { name: "Stop" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).not.toBeInTheDocument());
    expect(s.calls.filter((c) => c.method === "DELETE").map((c) => c.path)).toEqual([
      "/api/v1/sandbox/sessions/box/terminals/box",
      "/api/v1/sandbox/sessions/box/terminals/t2",
    ]);
    expect(screen.getByRole("status")).toHaveTextContent("Stopped “box”: 2 terminals ended.");
    // the audit log is read again, so the Stop's own records show
    await waitFor(() => expect(s.callsTo("GET", "/api/v1/sandbox/audit")).toHaveLength(2));
  });

  it("deletes a sandbox after confirming", async () => {
    const s = server();
    page(s);
    await userEvent.click(await screen.findByRole("button", { name: "Delete other" }));
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete" }));
    await waitFor(() => expect(s.callsTo("DELETE", "/api/v1/sandbox/sessions/other")).toHaveLength(1));
  });

  it("shows the audit log, pages back with the cursor and filters", async () => {
    const s = server();
    page(s);
    const table = await screen.findByTestId("audit-table");
    const denied = within(table).getByTestId("audit-row-3");
    expect(within(denied).getAllByRole("cell").map((c) => c.textContent)).toEqual([
      "2026-12-06 10:00:03 UTC",
      "sandbox.delete",
      "sandbox/s3",
      "denied",
      "error=forbidden",
      "10.0.0.7",
    ]);
    await userEvent.click(screen.getByRole("button", { name: "Load older records" }));
    await screen.findByTestId("audit-row-1");
    expect(screen.queryByRole("button", { name: "Load older records" })).not.toBeInTheDocument();

    await userEvent.type(screen.getByLabelText("Who (email or subject)"), "dev@acme.com");
    await userEvent.selectOptions(screen.getByLabelText("Action"), "sandbox.*");
    await userEvent.click(screen.getByRole("button", { name: "Apply" }));
    await waitFor(() =>
      expect(s.callsTo("GET", "/api/v1/sandbox/audit").map((c) => c.query)).toEqual([
        "limit=50",
        "cursor=2&limit=50",
        "actor=dev%40acme.com&action=sandbox.*&limit=50",
      ]),
    );
    expect(screen.getByTestId("audit-export")).toHaveAttribute(
      "href",
      "/api/v1/sandbox/audit?actor=dev%40acme.com&action=sandbox.*&format=jsonl",
    );
  });

  it("reads the audit log again on Refresh, with the applied filters", async () => {
    const s = server();
    page(s);
    await screen.findByTestId("audit-table");
    await userEvent.click(screen.getByRole("button", { name: "Refresh" }));
    await waitFor(() =>
      expect(s.callsTo("GET", "/api/v1/sandbox/audit").map((c) => c.query)).toEqual(["limit=50", "limit=50"]),
    );
  });

  it("says why when the server refuses", async () => {
    const s = server().on("GET", "/api/v1/sandbox/audit", {
      status: 403,
      body: { error: "org-admin-required", detail: "the audit log is for org admins" },
    });
    page(s);
    expect(await screen.findByText("Could not load the audit log: the audit log is for org admins")).toBeInTheDocument();
  });

  it("is not offered to members", () => {
    const s = server();
    page(s, DEV);
    expect(screen.getByText("This page is for the org's admins.")).toBeInTheDocument();
    expect(s.calls).toEqual([]);
  });
});
