/** The "Start session" form: optional name and repository, the server's message on error. */
import { useRef, useState, type FormEvent } from "react";
import { ApiError, type Agent, type SandboxItem } from "../api/client";
import { useApi } from "../api/context";
import { Modal } from "./Modal";

interface StartDialogProps {
  agent: Agent;
  onClose: () => void;
  onStarted: (item: SandboxItem) => void;
}

/**
 * Where a repository lands: the server clones `<org>/<repo>` into `<repo>` inside the
 * session's workspace folder, which is also where its terminal starts (the API does not
 * expose the folder's absolute path).
 */
export function cloneHint(repo: string): string {
  const name = repo.trim().replace(/\/+$/, "").split("/").pop() || "<repo>";
  return `Cloned into ./${name} in the session's workspace, where the terminal starts`;
}

export function StartDialog({ agent, onClose, onStarted }: StartDialogProps) {
  const api = useApi();
  const [name, setName] = useState("");
  const [repo, setRepo] = useState("");
  const [pending, setPending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameInput = useRef<HTMLInputElement>(null);

  const submit = async (ev: FormEvent) => {
    ev.preventDefault();
    setPending(true);
    setError(null);
    try {
      const body: { agent: string; name?: string; repo?: string } = { agent: agent.id };
      if (name.trim()) body.name = name.trim();
      if (repo.trim()) body.repo = repo.trim();
      const item = await api.createSession(body);
      onStarted(item);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof ApiError && err.status === 409) {
        // the name is taken: say so, and put the cursor where the fix goes
        setError(`${message}. Choose another session name.`);
        nameInput.current?.focus();
        nameInput.current?.select();
      } else {
        setError(message);
      }
      setPending(false);
    }
  };

  return (
    <Modal title={`Start ${agent.label}`} titleId="start-title" onClose={onClose}>
      <form onSubmit={(ev) => void submit(ev)} className="form" noValidate>
        <div className="field">
          <label htmlFor="start-name">Session name (optional)</label>
          <input
            id="start-name"
            ref={nameInput}
            name="name"
            autoComplete="off"
            value={name}
            onChange={(ev) => setName(ev.target.value)}
            data-autofocus
            aria-describedby={error ? "start-error" : undefined}
          />
        </div>
        <div className="field">
          <label htmlFor="start-repo">Repository (optional)</label>
          <input
            id="start-repo"
            name="repo"
            autoComplete="off"
            autoCapitalize="off"
            spellCheck={false}
            placeholder="org/site"
            value={repo}
            onChange={(ev) => setRepo(ev.target.value)}
            aria-describedby="start-repo-hint"
          />
          <p id="start-repo-hint" className="hint">
            {cloneHint(repo)}
          </p>
        </div>
        {error && (
          <p id="start-error" className="form-error" role="alert">
            {error}
          </p>
        )}
        <div className="modal-actions">
          <button type="button" className="btn" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary" disabled={pending}>
            {pending ? "Starting…" : "Start session"}
          </button>
        </div>
      </form>
    </Modal>
  );
}
