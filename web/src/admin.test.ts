import { describe, expect, it } from "vitest";
import {
  auditQuery,
  canStop,
  describeDetail,
  exportHref,
  formatAt,
  groupByOwner,
  nextDay,
  type SandboxDocument,
} from "./admin";
import type { SandboxItem } from "./api/client";
import { item } from "./test/render";

function doc(name: string, email: string, sub = ""): SandboxDocument {
  return {
    metadata: { name, namespace: "acme", annotations: sub ? { "openova.io/owner-sub": sub } : {} },
    spec: { owner: { email } },
  };
}

const it_ = (id: string, o: Record<string, unknown> = {}) => item(id, o) as SandboxItem;

describe("groupByOwner", () => {
  it("joins items to their owners by id and groups them, owners and names in order", () => {
    const items = [
      it_("zeta", { sessions: 2 }),
      it_("alpha", { sessions: 1 }),
      it_("mine", { sessions: 0 }),
      it_("orphan", { sessions: 1 }),
    ];
    const docs = [doc("zeta", "Bob@acme.com"), doc("alpha", "bob@acme.com"), doc("mine", "", "sub-ann")];
    const groups = groupByOwner(items, docs);
    expect(groups.map((g) => [g.owner, g.sandboxes.map((s) => s.item.id), g.terminals])).toEqual([
      ["Bob@acme.com", ["alpha", "zeta"], 3],
      ["sub-ann", ["mine"], 0],
      ["", ["orphan"], 1],
    ]);
    expect(groups[1]?.sandboxes[0]?.ownerSub).toBe("sub-ann");
  });

  it("is empty for an org without sandboxes and ignores documents without a name", () => {
    expect(groupByOwner([], [doc("x", "a@b.c"), { metadata: {} }])).toEqual([]);
  });
});

describe("audit queries", () => {
  it("leaves blank filters out and makes a date's until include that day", () => {
    expect(auditQuery({ actor: "  ", action: "", since: "", until: "" })).toBe("");
    expect(
      auditQuery(
        { actor: " dev@acme.com ", action: "sandbox.*", since: "2026-12-01", until: "2026-12-31" },
        { cursor: "42", limit: 50 },
      ),
    ).toBe("actor=dev%40acme.com&action=sandbox.*&since=2026-12-01&until=2027-01-01&cursor=42&limit=50");
    expect(auditQuery({ until: "2026-12-06T10:00:00Z" })).toBe("until=2026-12-06T10%3A00%3A00Z");
  });

  it("exports with the same filters as JSON lines and no cursor", () => {
    expect(exportHref({ action: "auth.*" })).toBe("/api/v1/sandbox/audit?action=auth.*&format=jsonl");
    expect(exportHref({})).toBe("/api/v1/sandbox/audit?format=jsonl");
  });

  it("finds the next day across months and years, and leaves junk alone", () => {
    expect(nextDay("2026-02-28")).toBe("2026-03-01");
    expect(nextDay("2026-12-31")).toBe("2027-01-01");
    expect(nextDay("someday")).toBe("someday");
  });
});

describe("display helpers", () => {
  it("formats times and details", () => {
    expect(formatAt("2026-12-06T10:28:27.223026Z")).toBe("2026-12-06 10:28:27 UTC");
    expect(formatAt("odd")).toBe("odd");
    expect(describeDetail({ agent: "aider", seconds: 1.5, limitUsd: null, ok: true })).toBe(
      "agent=aider, seconds=1.5, limitUsd=none, ok=true",
    );
    expect(describeDetail({})).toBe("");
  });

  it("offers Stop only with live terminals and not while deleting", () => {
    expect(canStop(it_("a", { sessions: 1, status: "running" }))).toBe(true);
    expect(canStop(it_("a", { sessions: 0, status: "running" }))).toBe(false);
    expect(canStop(it_("a", { sessions: 2, status: "stopping" }))).toBe(false);
  });
});
