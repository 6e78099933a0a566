/**
 * The org admin page's calls that the generated client does not type yet (the org
 * scope of the session list, the resource documents, the audit log): plain `fetch`,
 * the same error rule as `api/client.ts` (`ApiError`, and a 401 tells the app).
 */
import { ApiError, type SandboxItem } from "../api/client";
import {
  AUDIT_PATH,
  ORG_DOCUMENTS_PATH,
  ORG_SESSIONS_PATH,
  auditQuery,
  type AuditFilters,
  type AuditPage,
  type SandboxDocument,
} from "../admin";

export interface AdminApiOptions {
  baseUrl?: string;
  fetch?: (input: Request) => Promise<Response>;
  onUnauthenticated?: () => void;
}

export type AdminApi = ReturnType<typeof createAdminApi>;

export const AUDIT_PAGE_SIZE = 50;

export function createAdminApi(options: AdminApiOptions = {}) {
  const baseUrl = options.baseUrl ?? window.location.origin;
  const doFetch = options.fetch ?? ((req: Request) => fetch(req));

  async function getJson<T>(path: string): Promise<T> {
    const response = await doFetch(
      new Request(new URL(path, baseUrl), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }),
    );
    const text = await response.text();
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (!response.ok) {
      if (response.status === 401) options.onUnauthenticated?.();
      throw new ApiError(response.status, body);
    }
    return body as T;
  }

  return {
    /** Every sandbox of the caller's org, as session items. */
    orgSessions: async () =>
      (await getJson<{ sandboxes: SandboxItem[] }>(`${ORG_SESSIONS_PATH}?scope=org`)).sandboxes,
    /** The same sandboxes as documents: who owns each. */
    orgDocuments: async () =>
      (await getJson<{ items: SandboxDocument[] }>(`${ORG_DOCUMENTS_PATH}?scope=org`)).items,
    /** One page of the org's audit log, newest first. */
    audit: async (filters: AuditFilters, cursor: string | null = null) =>
      getJson<AuditPage>(`${AUDIT_PATH}?${auditQuery(filters, { cursor, limit: AUDIT_PAGE_SIZE })}`),
  };
}
