/**
 * "Open on another device": a one-time sign-in link for the signed-in user that lands on
 * this session, as a QR code and as text. The server draws the QR code (`qrSvg`); it is
 * shown as an <img> with a data: URL, so nothing in the SVG can run or touch the page.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import type { LoginLink } from "../api/client";
import { useApi } from "../api/context";
import { Modal } from "./Modal";
import { copyOrSelect } from "./copyText";

export function svgDataUrl(svg: string): string {
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

function expiryText(expiresAt: string, now: number): string {
  const when = new Date(expiresAt);
  if (Number.isNaN(when.getTime())) return `Expires ${expiresAt}`;
  const minutes = Math.max(0, Math.round((when.getTime() - now) / 60_000));
  const clock = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `Expires at ${clock} (in ${minutes} min)`;
}

export function DeviceLinkDialog({ next, onClose }: { next: string; onClose: () => void }) {
  const api = useApi();
  const [link, setLink] = useState<LoginLink | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [copied, setCopied] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);

  const make = useCallback(async () => {
    setBusy(true);
    setError(null);
    setCopied(null);
    try {
      setLink(await api.createLoginLink(next));
    } catch (err) {
      setLink(null);
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }, [api, next]);

  useEffect(() => {
    void make();
  }, [make]);

  const copy = async () => {
    if (!link) return;
    setCopied(await copyOrSelect(link.url, input.current));
  };

  return (
    <Modal
      title="Open on another device"
      titleId="device-link-title"
      describedBy="device-link-note"
      onClose={onClose}
    >
      <p id="device-link-note" className="hint">
        Scan the code with a phone or tablet, or send it the link: it signs that device in
        as you and opens this session. The link works once.
      </p>
      {busy && !link && (
        <p className="muted" role="status">
          Making a link…
        </p>
      )}
      {error && (
        <p className="form-error" role="alert">
          Could not make a link: {error}
        </p>
      )}
      {link && (
        <div className="device-link" data-testid="device-link">
          <img
            className="device-link-qr"
            src={svgDataUrl(link.qrSvg)}
            alt="QR code of the sign-in link"
            width={260}
            height={260}
          />
          <div className="field">
            <label htmlFor="device-link-url">Sign-in link</label>
            <div className="device-link-row">
              <input
                id="device-link-url"
                ref={input}
                readOnly
                value={link.url}
                onFocus={(ev) => ev.currentTarget.select()}
              />
              <button type="button" className="btn" onClick={() => void copy()}>
                Copy
              </button>
            </div>
          </div>
          <p className="muted device-link-copied" role="status" aria-live="polite">
            {copied ?? "\u00a0"}
          </p>
          <p className="hint">
            <time dateTime={link.expiresAt}>{expiryText(link.expiresAt, Date.now())}</time>; single
            use.
          </p>
        </div>
      )}
      <div className="modal-actions">
        <button type="button" className="btn" onClick={() => void make()} disabled={busy}>
          New link
        </button>
        <button type="button" className="btn btn-primary" onClick={onClose} data-autofocus>
          Done
        </button>
      </div>
    </Modal>
  );
}
