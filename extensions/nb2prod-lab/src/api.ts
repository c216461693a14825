/**
 * The panel's client of nb2prod's REST API (`/nb2prod/api/` of the Jupyter server).
 * Requests go through ServerConnection: the server's token and XSRF cookie are sent.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An nb2prod error: its one-line message and the fix. */
export class Nb2ProdApiError extends Error {
  constructor(
    message: string,
    public hint: string | null,
    public status: number
  ) {
    super(message);
  }
}

export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nb2prod', 'api', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new Nb2ProdApiError(
      'the Jupyter server did not answer',
      'check that it is running',
      0
    );
  }
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new Nb2ProdApiError(
      (data && data.message) || response.statusText || 'request failed',
      (data && data.hint) || null,
      response.status
    );
  }
  return data as T;
}

export interface IRun {
  run_id: string;
  experiment_id: string;
  kind: string;
  status: string;
  started: number | null;
  duration_s: number | null;
  params: Record<string, string>;
  metrics: Record<string, number>;
  data_digests: Record<string, string>;
  changes: string[];
  reproduced: boolean | null;
  reproduces: string | null;
  url: string | null;
}

export interface IDataset {
  name: string;
  role: string;
  digest: string;
  rows: number | null;
  columns: number | null;
  schema: { name: string; type: string; required: boolean }[];
}

export interface IAliasMove {
  alias: string;
  from_version: string | null;
  to_version: string | null;
  at: string;
  reason: string;
  actor: string;
}

export interface IVersion {
  version: string;
  run_id: string | null;
  aliases: string[];
  created: number | null;
  status: string;
  from_notebook: boolean;
  bentos: string[];
  url: string | null;
}

export interface IModel {
  name: string;
  aliases: Record<string, string>;
  versions: IVersion[];
  timeline: IAliasMove[];
  bentos: { tag: string; model_version: string; versions: string[]; latest: boolean }[];
  url: string | null;
}

export interface IParameter {
  name: string;
  type_name: string;
  default: string;
  help: string;
}

export interface INotebookView {
  path: string;
  project: { home: string; tracking_uri: string; ui_url: string | null; version: string };
  runs: IRun[];
  more_runs: boolean;
  datasets: IDataset[];
  models: IModel[];
  parameters: IParameter[] | null;
  seconds: number;
  errors: string[];
}

export interface IService {
  url: string;
  model: string | null;
  source: string;
  reachable: boolean;
  error: string | null;
  bento: string | null;
  active_version: string | null;
  canary: { version: string; percent: number } | null;
  requests_per_minute: number | null;
  drift_status: string | null;
  features: { name: string; psi: number | null; drifted: boolean }[];
  quality: Record<string, any>;
}

export interface IAction {
  id: string;
  kind: string;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  progress: string;
  elapsed_s: number;
  result: Record<string, any> | null;
  error: { message: string; hint: string | null } | null;
}
