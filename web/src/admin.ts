/**
 * The org admin's page, its pure parts: the org's sandboxes grouped by owner, and the
 * audit log's queries. The types of `GET /audit` and of the resource documents are
 * declared here (the generated `schema.d.ts` follows the server's OpenAPI document,
 * which the coordinator refreshes; docs/console.md, "The org admin's page").
 */
import type { SandboxItem } from "./api/client";

export const AUDIT_PATH = "/api/v1/sandbox/audit";
export const ORG_SESSIONS_PATH = "/api/v1/sandbox/sessions";
/** The embedded server's one cluster is `local` (docs/resources.md). */
export const ORG_DOCUMENTS_PATH = "/api/v1/sovereigns/local/k8s/sandboxes";
export const OWNER_SUB_ANNOTATION = "openova.io/owner-sub";

/** One record of the audit log (docs/api.md, "Audit"). */
export interface AuditRecord {
  org: string;
  seq: number;
  at: string;
  actor: { sub: string; email: string };
  action: string;
  target: string;
  outcome: "success" | "denied" | "failure" | string;
  client: string;
  detail: Record<string, string | number | boolean | null>;
  prev: string;
  hash: string;
}

export interface AuditPage {
  items: AuditRecord[];
  cursor: string | null;
}

export interface AuditFilters {
  actor?: string;
  action?: string;
  /** `YYYY-MM-DD` (UTC midnight) or RFC 3339 */
  since?: string;
  /** exclusive; a date means "up to the end of that day" in the page (see `auditQuery`) */
  until?: string;
}

/** The actions the server records, for the filter's list (any other string works too). */
export const AUDIT_ACTIONS: readonly [string, string][] = [
  ["", "Any action"],
  ["auth.*", "Sign-ins"],
  ["sandbox.*", "Sandboxes created or deleted"],
  ["terminal.*", "Terminals attached, detached, closed"],
  ["share.*", "Share links"],
  ["token.*", "Access tokens"],
  ["quota.*", "Quotas"],
  ["budget.*", "Budgets"],
  ["secret.*", "Sandbox secrets read or set by agents"],
];

/** The day after a `YYYY-MM-DD` date (so "until" a day includes that day). */
export function nextDay(date: string): string {
  const t = Date.parse(`${date}T00:00:00Z`);
  if (Number.isNaN(t)) return date;
  return new Date(t + 86_400_000).toISOString().slice(0, 10);
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The query string of one page (or of the export, `format: "jsonl"`): blank filters
 * are left out, `until` as a date includes that whole day. */
export function auditQuery(
  filters: AuditFilters,
  extra: { cursor?: string | null; limit?: number; format?: "jsonl" } = {},
): string {
  const q = new URLSearchParams();
  const actor = filters.actor?.trim();
  const action = filters.action?.trim();
  const since = filters.since?.trim();
  const until = filters.until?.trim();
  if (actor) q.set("actor", actor);
  if (action) q.set("action", action);
  if (since) q.set("since", since);
  if (until) q.set("until", DATE.test(until) ? nextDay(until) : until);
  if (extra.cursor) q.set("cursor", extra.cursor);
  if (extra.limit !== undefined) q.set("limit", String(extra.limit));
  if (extra.format) q.set("format", extra.format);
  return q.toString();
}

/** Where the export link points: the same filters, JSON lines, oldest first. */
export function exportHref(filters: AuditFilters): string {
  return `${AUDIT_PATH}?${auditQuery(filters, { format: "jsonl" })}`;
}

/** `2026-12-06T10:28:27.223026Z` → `2026-12-06 10:28:27 UTC` (what the table shows). */
export function formatAt(at: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(at);
  return m ? `${m[1]} ${m[2]} UTC` : at;
}

/** A record's detail as one short line (`agent=aider, error=…`). */
export function describeDetail(detail: AuditRecord["detail"]): string {
  return Object.entries(detail)
    .map(([k, v]) => `${k}=${v === null ? "none" : String(v)}`)
    .join(", ");
}

// --- the org's sandboxes by owner ---------------------------------------------------------

/** What the resource list gives for one Sandbox (only the fields read here). */
export interface SandboxDocument {
  metadata?: { name?: string; namespace?: string; annotations?: Record<string, string> };
  spec?: { owner?: { email?: string } };
}

export interface OwnedSandbox {
  item: SandboxItem;
  ownerEmail: string;
  ownerSub: string;
}

export interface OwnerGroup {
  /** the owner's email, else their subject, else "" (unknown) */
  owner: string;
  sandboxes: OwnedSandbox[];
  terminals: number;
}

/**
 * The session items (`GET /sessions?scope=org`: state, activity, terminals, storage,
 * spend) with their owners from the resource documents (`GET …/k8s/sandboxes?scope=org`),
 * joined by id, grouped by owner (emails compared without case), owners and sandboxes in
 * name order. An item without a document (created between the two reads) is kept under
 * an unknown owner rather than dropped.
 */
export function groupByOwner(items: SandboxItem[], documents: SandboxDocument[]): OwnerGroup[] {
  const owners = new Map<string, { email: string; sub: string }>();
  for (const doc of documents) {
    const name = doc.metadata?.name;
    if (!name) continue;
    owners.set(name, {
      email: doc.spec?.owner?.email ?? "",
      sub: doc.metadata?.annotations?.[OWNER_SUB_ANNOTATION] ?? "",
    });
  }
  const groups = new Map<string, OwnerGroup>();
  for (const item of items) {
    const owner = owners.get(item.id) ?? { email: "", sub: "" };
    const label = owner.email || owner.sub;
    const key = label.toLowerCase();
    let group = groups.get(key);
    if (!group) {
      group = { owner: label, sandboxes: [], terminals: 0 };
      groups.set(key, group);
    }
    group.sandboxes.push({ item, ownerEmail: owner.email, ownerSub: owner.sub });
    group.terminals += item.sessions;
  }
  const sorted = [...groups.values()].sort((a, b) => {
    if (!a.owner !== !b.owner) return a.owner ? -1 : 1; // the unknown owner last
    return a.owner.localeCompare(b.owner);
  });
  for (const g of sorted) g.sandboxes.sort((a, b) => a.item.name.localeCompare(b.item.name));
  return sorted;
}

/** Whether Stop has anything to end: live terminals and not already being deleted. */
export function canStop(item: SandboxItem): boolean {
  return item.sessions > 0 && item.status !== "stopping";
}
