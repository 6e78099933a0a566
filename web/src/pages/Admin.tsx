/**
 * `/sandbox/admin`: the org admin's page. The org's sandboxes by user (state, activity,
 * terminals, storage, spend; Stop ends a sandbox's terminals, Delete removes it), and the
 * org's audit log with filters, older pages and an export as JSON lines.
 */
import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError, type SandboxItem, type WhoAmI } from "../api/client";
import { useApi } from "../api/context";
import {
  AUDIT_ACTIONS,
  canStop,
  describeDetail,
  exportHref,
  formatAt,
  groupByOwner,
  type AuditFilters,
  type AuditRecord,
  type OwnerGroup,
} from "../admin";
import { createAdminApi, type AdminApi } from "../admin/adminApi";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { useTitle } from "../hooks";
import { Link, sessionPath } from "../router";

export const ORG_POLL_MS = 5000;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const STATUS_PILL: Record<string, string> = {
  running: "pill-green",
  failed: "pill-red",
  stopping: "pill-amber",
  pending: "pill-amber",
};

type Pending = { kind: "stop" | "delete"; item: SandboxItem } | null;

function OrgSandboxes({ admin, onChanged }: { admin: AdminApi; onChanged: () => void }) {
  const api = useApi();
  const [groups, setGroups] = useState<OwnerGroup[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [pending, setPending] = useState<Pending>(null);
  const [done, setDone] = useState<string>("");

  const load = useCallback(async () => {
    try {
      const [items, documents] = await Promise.all([admin.orgSessions(), admin.orgDocuments()]);
      setGroups(groupByOwner(items, documents));
      setError(null);
    } catch (err) {
      setError(message(err));
    }
  }, [admin]);

  useEffect(() => {
    void load();
    const timer = window.setInterval(() => void load(), ORG_POLL_MS);
    return () => window.clearInterval(timer);
  }, [load]);

  const stop = async (item: SandboxItem) => {
    const terminals = await api.listTerminals(item.id);
    for (const t of terminals) {
      try {
        await api.closeTerminal(item.id, t.id);
      } catch (err) {
        // one that ended on its own meanwhile is what Stop wanted
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
    }
    setDone(`Stopped “${item.name}”: ${terminals.length} terminal${terminals.length === 1 ? "" : "s"} ended.`);
  };
  const remove = async (item: SandboxItem) => {
    await api.deleteSession(item.id);
    setDone(`Deleting “${item.name}”.`);
  };

  const total = groups?.reduce((n, g) => n + g.sandboxes.length, 0) ?? 0;
  return (
    <section className="card admin-sandboxes" aria-labelledby="admin-sandboxes-title">
      <h2 id="admin-sandboxes-title">Sandboxes by user</h2>
      {error && (
        <p className="form-error" role="alert">
          Could not load the org's sandboxes: {error}
        </p>
      )}
      {groups === null && !error && <p className="muted">Loading sandboxes…</p>}
      {groups !== null && total === 0 && <p className="muted">No sandboxes in the org.</p>}
      <p className="admin-done" role="status">
        {done}
      </p>
      {groups?.map((group) => (
        <section
          key={group.owner || "(unknown)"}
          className="admin-owner"
          aria-label={group.owner || "Unknown owner"}
          data-testid={`admin-owner-${group.owner || "unknown"}`}
        >
          <h3>
            {group.owner || "Unknown owner"}{" "}
            <span className="muted">
              {group.sandboxes.length} sandbox{group.sandboxes.length === 1 ? "" : "es"},{" "}
              {group.terminals} terminal{group.terminals === 1 ? "" : "s"}
            </span>
          </h3>
          <div className="table-scroll">
            <table className="data-table">
              <thead>
                <tr>
                  <th scope="col">Session</th>
                  <th scope="col">Agent</th>
                  <th scope="col">State</th>
                  <th scope="col">Activity</th>
                  <th scope="col" className="num">
                    Terminals
                  </th>
                  <th scope="col" className="num">
                    Storage
                  </th>
                  <th scope="col" className="num">
                    Spend (30 d)
                  </th>
                  {/* named for screen readers; no hidden text, which an absolutely
                      positioned span would carry out of the scrolling box on a phone */}
                  <th scope="col" aria-label="Actions" />
                </tr>
              </thead>
              <tbody>
                {group.sandboxes.map(({ item }) => (
                  <tr key={item.id} data-testid={`admin-row-${item.id}`}>
                    <th scope="row">
                      <Link href={sessionPath(item.id)}>{item.name}</Link>
                    </th>
                    <td>{item.agent}</td>
                    <td>
                      <span className={`pill ${STATUS_PILL[item.status] ?? "pill-muted"}`}>
                        {item.status}
                      </span>
                    </td>
                    <td>{item.activity ?? "—"}</td>
                    <td className="num">{item.sessions}</td>
                    <td className="num">{item.storageUsed ?? "—"}</td>
                    <td className="num">{item.spend30d ?? "—"}</td>
                    <td>
                      <div className="row-actions">
                        <button
                          type="button"
                          className="btn btn-small"
                          disabled={!canStop(item)}
                          aria-label={`Stop ${item.name}`}
                          onClick={() => setPending({ kind: "stop", item })}
                        >
                          Stop
                        </button>
                        <button
                          type="button"
                          className="btn btn-small btn-danger-outline"
                          disabled={item.status === "stopping"}
                          aria-label={`Delete ${item.name}`}
                          onClick={() => setPending({ kind: "delete", item })}
                        >
                          Delete
                        </button>
                      </div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      ))}
      {pending?.kind === "stop" && (
        <ConfirmDialog
          title={`Stop “${pending.item.name}”?`}
          message={`Ends its ${pending.item.sessions} terminal${pending.item.sessions === 1 ? "" : "s"} (the agent and any shells). The workspace stays; the next attach starts the agent again.`}
          confirmLabel="Stop"
          busyLabel="Stopping…"
          onConfirm={async () => {
            await stop(pending.item);
            setPending(null);
            onChanged();
            await load();
          }}
          onCancel={() => setPending(null)}
        />
      )}
      {pending?.kind === "delete" && (
        <ConfirmDialog
          title={`Delete “${pending.item.name}”?`}
          message={`“${pending.item.name}” stops its terminals and removes its workspace. This cannot be undone.`}
          confirmLabel="Delete"
          busyLabel="Deleting…"
          onConfirm={async () => {
            await remove(pending.item);
            setPending(null);
            onChanged();
            await load();
          }}
          onCancel={() => setPending(null)}
        />
      )}
    </section>
  );
}

const OUTCOME_PILL: Record<string, string> = {
  success: "pill-green",
  denied: "pill-red",
  failure: "pill-amber",
};

/** `version`: bumped when this page changed something, so the newest records show. */
function AuditLog({ admin, version }: { admin: AdminApi; version: number }) {
  const [refreshed, setRefreshed] = useState(0);
  const [draft, setDraft] = useState<AuditFilters>({});
  const [applied, setApplied] = useState<AuditFilters>({});
  const [records, setRecords] = useState<AuditRecord[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);

  useEffect(() => {
    let live = true;
    setLoading(true);
    admin.audit(applied).then(
      (page) => {
        if (!live) return;
        setRecords(page.items);
        setCursor(page.cursor);
        setError(null);
        setLoading(false);
      },
      (err: unknown) => {
        if (!live) return;
        setError(message(err));
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [admin, applied, version, refreshed]);

  const older = async () => {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await admin.audit(applied, cursor);
      setRecords((shown) => [...(shown ?? []), ...page.items]);
      setCursor(page.cursor);
      setError(null);
    } catch (err) {
      setError(message(err));
    } finally {
      setLoading(false);
    }
  };
  const apply = (ev: FormEvent) => {
    ev.preventDefault();
    setApplied({ ...draft });
  };
  const field = (key: keyof AuditFilters) => ({
    value: draft[key] ?? "",
    onChange: (ev: { target: { value: string } }) => setDraft((d) => ({ ...d, [key]: ev.target.value })),
  });

  return (
    <section className="card admin-audit" aria-labelledby="admin-audit-title" aria-busy={loading}>
      <h2 id="admin-audit-title">Audit log</h2>
      <p className="lead">
        Sign-ins, sandboxes created and deleted, terminals attached and detached, share links,
        access tokens, quota and budget changes in the org, newest first. Each record carries
        the hash of the one before it, so a changed or removed record shows (
        <code>sandbox audit verify --file</code> checks an export).
      </p>
      <form className="audit-filters" onSubmit={apply} aria-label="Filter the audit log">
        <div className="field">
          <label htmlFor="audit-actor">Who (email or subject)</label>
          <input id="audit-actor" type="text" autoComplete="off" {...field("actor")} />
        </div>
        <div className="field">
          <label htmlFor="audit-action">Action</label>
          <select id="audit-action" {...field("action")}>
            {AUDIT_ACTIONS.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="audit-since">From (UTC)</label>
          <input id="audit-since" type="date" {...field("since")} />
        </div>
        <div className="field">
          <label htmlFor="audit-until">To (UTC, inclusive)</label>
          <input id="audit-until" type="date" {...field("until")} />
        </div>
        <button type="submit" className="btn">
          Apply
        </button>
        <button type="button" className="btn" onClick={() => setRefreshed((n) => n + 1)}>
          Refresh
        </button>
        <a className="btn" href={exportHref(applied)} download data-testid="audit-export">
          Export (JSON lines)
        </a>
      </form>
      {error && (
        <p className="form-error" role="alert">
          Could not load the audit log: {error}
        </p>
      )}
      {records === null && !error && <p className="muted">Loading the audit log…</p>}
      {records !== null && records.length === 0 && <p className="muted">No records match.</p>}
      {records !== null && records.length > 0 && (
        <div className="table-scroll">
          <table className="data-table" data-testid="audit-table">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Who</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Detail</th>
                <th scope="col">Client</th>
              </tr>
            </thead>
            <tbody>
              {records.map((r) => (
                <tr key={r.seq} data-testid={`audit-row-${r.seq}`}>
                  <td>
                    <time dateTime={r.at}>{formatAt(r.at)}</time>
                  </td>
                  <th scope="row" title={r.actor.sub}>
                    {r.actor.email || r.actor.sub || "—"}
                  </th>
                  <td>{r.action}</td>
                  <td>{r.target || "—"}</td>
                  <td>
                    <span className={`pill ${OUTCOME_PILL[r.outcome] ?? "pill-muted"}`}>{r.outcome}</span>
                  </td>
                  <td className="audit-detail">{describeDetail(r.detail) || "—"}</td>
                  <td>{r.client || "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && (
        <button type="button" className="btn" onClick={() => void older()} disabled={loading}>
          Load older records
        </button>
      )}
    </section>
  );
}

export function AdminPage({
  who,
  admin: injected,
  onUnauthenticated,
}: {
  who: WhoAmI | null;
  admin?: AdminApi;
  onUnauthenticated?: () => void;
}) {
  useTitle("Org admin");
  const [version, setVersion] = useState(0);
  const bump = useCallback(() => setVersion((n) => n + 1), []);
  const admin = useMemo(
    () => injected ?? createAdminApi(onUnauthenticated ? { onUnauthenticated } : {}),
    [injected, onUnauthenticated],
  );
  if (who !== null && !who.orgAdmin) {
    return (
      <div className="page narrow">
        <h1 className="page-title">Org admin</h1>
        <p>This page is for the org's admins.</p>
        <Link href="/sandbox">Back to sessions</Link>
      </div>
    );
  }
  const org = who?.org || "the org";
  return (
    <div className="page admin-page">
      <h1 className="page-title">Administer {org}</h1>
      <OrgSandboxes admin={admin} onChanged={bump} />
      <AuditLog admin={admin} version={version} />
    </div>
  );
}

export default AdminPage;
