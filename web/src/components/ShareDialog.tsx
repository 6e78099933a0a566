/**
 * "Share": the owner makes a link others of the org can open (view only, or able to
 * type), expiring after the chosen time, and revokes links (their viewers are
 * disconnected at once). The link's token is shown once, when made; listing never has it.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import type { Share, ShareCreated, ShareMode } from "../api/client";
import { useApi } from "../api/context";
import { Modal } from "./Modal";
import { copyOrSelect } from "./copyText";

export const EXPIRY_CHOICES: { label: string; seconds: number }[] = [
  { label: "1 hour", seconds: 3600 },
  { label: "8 hours", seconds: 8 * 3600 },
  { label: "1 day", seconds: 86_400 },
  { label: "7 days", seconds: 7 * 86_400 },
];

function when(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

const MODE_TEXT: Record<string, string> = { read: "View only", write: "Can type" };

export function ShareDialog({ sessionId, onClose }: { sessionId: string; onClose: () => void }) {
  const api = useApi();
  const [mode, setMode] = useState<ShareMode>("read");
  const [ttl, setTtl] = useState(EXPIRY_CHOICES[0]!.seconds);
  const [shares, setShares] = useState<Share[] | null>(null);
  const [made, setMade] = useState<ShareCreated | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [copied, setCopied] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);

  const load = useCallback(async () => {
    try {
      setShares(await api.listShares(sessionId));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [api, sessionId]);

  useEffect(() => {
    void load();
  }, [load]);

  const create = async () => {
    setBusy(true);
    setError(null);
    setCopied(null);
    try {
      setMade(await api.createShare(sessionId, { mode, ttlSeconds: ttl }));
      await load();
    } catch (err) {
      setError(`Could not make a link: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (share: Share) => {
    setError(null);
    try {
      await api.revokeShare(sessionId, share.id);
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status !== 404) {
        setError(`Could not revoke: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
    }
    if (made?.id === share.id) setMade(null);
    await load();
  };

  const copy = async () => {
    if (!made) return;
    setCopied(await copyOrSelect(made.url, input.current));
  };

  return (
    <Modal title="Share this session" titleId="share-title" describedBy="share-note" onClose={onClose}>
      <p id="share-note" className="hint">
        Anyone signed in to your organisation who has the link can watch this terminal until
        it expires or you revoke it. “Can type” lets them type too.
      </p>
      <div className="share-form">
        <fieldset className="field">
          <legend>Access</legend>
          <label className="radio">
            <input
              type="radio"
              name="share-mode"
              value="read"
              checked={mode === "read"}
              onChange={() => setMode("read")}
            />{" "}
            View only
          </label>
          <label className="radio">
            <input
              type="radio"
              name="share-mode"
              value="write"
              checked={mode === "write"}
              onChange={() => setMode("write")}
            />{" "}
            Can type
          </label>
        </fieldset>
        <div className="field">
          <label htmlFor="share-expiry">Expires after</label>
          <select id="share-expiry" value={ttl} onChange={(ev) => setTtl(Number(ev.target.value))}>
            {EXPIRY_CHOICES.map((c) => (
              <option key={c.seconds} value={c.seconds}>
                {c.label}
              </option>
            ))}
          </select>
        </div>
        <button type="button" className="btn btn-primary" onClick={() => void create()} disabled={busy}>
          {busy ? "Making a link…" : "Create link"}
        </button>
      </div>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {made && (
        <div className="field share-made" data-testid="share-link">
          <label htmlFor="share-url">
            New link ({MODE_TEXT[made.mode] ?? made.mode}, until {when(made.expiresAt)})
          </label>
          <div className="device-link-row">
            <input
              id="share-url"
              ref={input}
              readOnly
              value={made.url}
              onFocus={(ev) => ev.currentTarget.select()}
            />
            <button type="button" className="btn" onClick={() => void copy()}>
              Copy
            </button>
          </div>
          <p className="muted" role="status" aria-live="polite">
            {copied ?? "Shown once: copy it now."}
          </p>
        </div>
      )}
      <h3 className="share-list-title">Active links</h3>
      {shares === null ? (
        <p className="muted">Loading…</p>
      ) : shares.length === 0 ? (
        <p className="muted">No active links.</p>
      ) : (
        <ul className="share-list" aria-label="Active links">
          {shares.map((share) => (
            <li key={share.id} className="share-row" data-testid={`share-${share.id}`}>
              <span>
                <strong>{MODE_TEXT[share.mode] ?? share.mode}</strong>
                <span className="muted">
                  {" "}
                  · until {when(share.expiresAt)} · by {share.createdBy}
                </span>
              </span>
              <button
                type="button"
                className="btn btn-small btn-danger-outline"
                aria-label={`Revoke the ${(MODE_TEXT[share.mode] ?? share.mode).toLowerCase()} link made ${when(share.createdAt)}`}
                onClick={() => void revoke(share)}
              >
                Revoke
              </button>
            </li>
          ))}
        </ul>
      )}
      <div className="modal-actions">
        <button type="button" className="btn" onClick={onClose} data-autofocus>
          Done
        </button>
      </div>
    </Modal>
  );
}
