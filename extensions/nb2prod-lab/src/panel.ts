/**
 * The nb2prod side panel: runs, datasets, models (versions, aliases, timeline, Bentos) and
 * served services of the active notebook, with the actions export, promote, rollback,
 * re-run and "open the drift report". Plain DOM (textContent only: nothing from the store
 * is ever parsed as HTML, except the drift report, shown in a sandboxed iframe).
 */
import { Widget } from '@lumino/widgets';

import {
  IAction,
  IModel,
  INotebookView,
  IRun,
  IService,
  Nb2ProdApiError,
  requestAPI
} from './api';

type Child = Node | string | null | undefined | false;

/** Runs rendered at first (the rest behind a button): the first paint stays fast. */
const FIRST_RUNS = 30;

/** A DOM element with attributes and children (strings become text nodes). */
export function h(
  tag: string,
  attrs: Record<string, string | ((ev: Event) => void)> = {},
  ...children: Child[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (typeof value === 'function') {
      el.addEventListener(key.replace(/^on/, ''), value);
    } else {
      el.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

function when(seconds: number | null): string {
  if (!seconds) {
    return '-';
  }
  return new Date(seconds * 1000).toISOString().replace('T', ' ').slice(0, 19);
}

function duration(seconds: number | null): string {
  if (seconds === null || seconds === undefined) {
    return '-';
  }
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

function short(text: string, n = 12): string {
  return text.length > n ? text.slice(0, n) + '…' : text;
}

function link(label: string, url: string | null): Node {
  if (!url) {
    return document.createTextNode(label);
  }
  return h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, label);
}

function section(title: string, cls: string, ...children: Child[]): HTMLElement {
  return h(
    'details',
    { class: `nb2prod-section ${cls}`, open: '' },
    h('summary', {}, title),
    ...children
  );
}

/** Opens the drift report (HTML) somewhere: the plugin puts it in a main-area tab. */
export type ReportOpener = (model: string, html: string) => void;

export class Nb2ProdPanel extends Widget {
  private path: string | null = null;
  private view: INotebookView | null = null;
  private services: IService[] = [];
  private actions = new Map<string, IAction>();
  private body: HTMLElement;
  private status: HTMLElement;
  private actionsBox: HTMLElement;
  private generation = 0;
  private allRuns = false;
  /** Milliseconds from the request to the rendered view, for the last refresh. */
  lastPaintMs = 0;

  constructor(private openReport: ReportOpener) {
    super();
    this.id = 'nb2prod-panel';
    this.addClass('nb2prod-panel');
    this.title.caption = 'nb2prod';
    this.status = h('div', { class: 'nb2prod-status' }, 'Open a notebook to see what production knows about it.');
    this.actionsBox = h('div', { class: 'nb2prod-actions' });
    this.body = h('div', { class: 'nb2prod-body' });
    const header = h(
      'div',
      { class: 'nb2prod-header' },
      h('span', { class: 'nb2prod-title' }, 'nb2prod'),
      h('button', { class: 'nb2prod-refresh jp-Button', title: 'Refresh', onclick: () => void this.refresh() }, '⟳')
    );
    this.node.append(header, this.status, this.actionsBox, this.body);
  }

  /** Show ``path`` (relative to the Jupyter root), or nothing when null. */
  setNotebook(path: string | null): void {
    if (path === this.path) {
      return;
    }
    this.path = path;
    this.allRuns = false;
    void this.refresh();
  }

  async refresh(): Promise<void> {
    const generation = ++this.generation;
    if (!this.path) {
      this.view = null;
      this.status.textContent = 'Open a notebook to see what production knows about it.';
      this.body.replaceChildren();
      return;
    }
    const started = performance.now();
    this.status.textContent = `Loading ${this.path}…`;
    this.node.dataset.state = 'loading';
    try {
      const view = await requestAPI<INotebookView>(
        `notebook?path=${encodeURIComponent(this.path)}`
      );
      if (generation !== this.generation) {
        return;
      }
      this.view = view;
      this.render();
      this.lastPaintMs = performance.now() - started;
      this.node.dataset.paintMs = this.lastPaintMs.toFixed(1);
      this.node.dataset.state = 'ready';
      void this.refreshServices(generation);
    } catch (error) {
      if (generation !== this.generation) {
        return;
      }
      this.node.dataset.state = 'error';
      this.body.replaceChildren(this.errorBox(error));
      this.status.textContent = this.path;
    }
  }

  private async refreshServices(generation: number): Promise<void> {
    try {
      const services = await requestAPI<IService[]>('services');
      if (generation === this.generation) {
        this.services = services;
        this.renderServices();
      }
    } catch (error) {
      // the notebook's view stays; the services section says what failed
      const box = this.node.querySelector('.nb2prod-services-list');
      box?.replaceChildren(this.errorBox(error));
    }
  }

  private errorBox(error: unknown): HTMLElement {
    const message = error instanceof Error ? error.message : String(error);
    const hint = error instanceof Nb2ProdApiError ? error.hint : null;
    return h(
      'div',
      { class: 'nb2prod-error' },
      h('div', { class: 'nb2prod-error-message' }, `nb2prod: ${message}`),
      hint ? h('div', { class: 'nb2prod-error-hint' }, `fix: ${hint}`) : null
    );
  }

  private render(): void {
    const view = this.view!;
    this.status.replaceChildren(
      h('div', { class: 'nb2prod-notebook' }, view.path),
      h('div', { class: 'nb2prod-store', title: 'tracking store' }, view.project.tracking_uri)
    );
    this.body.replaceChildren(
      ...view.errors.map(e => h('div', { class: 'nb2prod-error' }, e)),
      this.renderRuns(view),
      this.renderDatasets(view),
      this.renderModels(view),
      section(
        'Services',
        'nb2prod-services',
        h('div', { class: 'nb2prod-services-list' }, 'Looking for services…'),
        this.addServiceForm()
      ),
      this.renderRerun(view)
    );
  }

  private renderRuns(view: INotebookView): HTMLElement {
    if (!view.runs.length) {
      return section('Runs', 'nb2prod-runs', h('div', { class: 'nb2prod-empty' }, 'No run of this notebook yet: %nb2prod start, or nb2prod run.'));
    }
    const shown = this.allRuns ? view.runs : view.runs.slice(0, FIRST_RUNS);
    const rows = shown.map((run: IRun) => {
      const verdict =
        run.reproduced === null ? null : run.reproduced ? 'reproduced' : 'NOT reproduced';
      const params = Object.entries(run.params)
        .slice(0, 8)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      const metrics = Object.entries(run.metrics)
        .slice(0, 4)
        .map(([k, v]) => `${k}=${Number(v).toPrecision(4)}`)
        .join(' ');
      return h(
        'div',
        { class: 'nb2prod-run', 'data-run': run.run_id },
        h(
          'div',
          { class: 'nb2prod-run-head' },
          link(short(run.run_id, 8), run.url),
          ' ',
          h('span', { class: `nb2prod-run-status nb2prod-${run.status.toLowerCase()}` }, run.status),
          ` ${when(run.started)} · ${duration(run.duration_s)}`,
          verdict ? h('span', { class: 'nb2prod-verdict' }, ` · ${verdict}`) : null
        ),
        params ? h('div', { class: 'nb2prod-params' }, params) : null,
        metrics ? h('div', { class: 'nb2prod-metrics' }, metrics) : null,
        run.changes.length ? h('div', { class: 'nb2prod-changes' }, `changed: ${run.changes.join(', ')}`) : null
      );
    });
    return section(
      `Runs (${view.runs.length}${view.more_runs ? '+' : ''})`,
      'nb2prod-runs',
      h('div', { class: 'nb2prod-run-list' }, ...rows),
      shown.length < view.runs.length
        ? h(
            'button',
            {
              class: 'nb2prod-more-runs jp-Button',
              onclick: () => {
                this.allRuns = true;
                this.render();
              }
            },
            `Show all ${view.runs.length} runs`
          )
        : null
    );
  }

  private renderDatasets(view: INotebookView): HTMLElement {
    if (!view.datasets.length) {
      return section('Datasets', 'nb2prod-datasets', h('div', { class: 'nb2prod-empty' }, 'No tracked dataset: %nb2prod data DF.'));
    }
    return section(
      'Datasets',
      'nb2prod-datasets',
      ...view.datasets.map(ds =>
        h(
          'div',
          { class: 'nb2prod-dataset' },
          h('b', {}, ds.name),
          ` (${ds.role || 'data'}) ${ds.rows ?? '?'} × ${ds.columns ?? '?'} `,
          h('code', { title: ds.digest }, short(ds.digest, 24)),
          h(
            'div',
            { class: 'nb2prod-schema' },
            ds.schema
              .slice(0, 12)
              .map(c => `${c.name}: ${c.type}${c.required ? '' : '?'}`)
              .join(', ') + (ds.schema.length > 12 ? `, … ${ds.schema.length - 12} more` : '')
          )
        )
      )
    );
  }

  private renderModels(view: INotebookView): HTMLElement {
    if (!view.models.length) {
      return section('Models', 'nb2prod-models', h('div', { class: 'nb2prod-empty' }, 'No registered model from this notebook: %nb2prod model EST.'));
    }
    return section('Models', 'nb2prod-models', ...view.models.map(m => this.renderModel(m)));
  }

  private renderModel(model: IModel): HTMLElement {
    const champion = model.aliases['champion'];
    const versions = model.versions.slice(0, 50).map(v =>
      h(
        'tr',
        { class: 'nb2prod-version', 'data-model': model.name, 'data-version': v.version },
        h(
          'td',
          { class: 'nb2prod-version-cell' },
          link(`v${v.version}`, v.url),
          h(
            'div',
            { class: 'nb2prod-version-actions' },
            h('button', { class: 'nb2prod-export jp-Button', onclick: () => void this.start({ action: 'export', model: model.name, version: v.version }) }, 'Export'),
            v.version !== champion
              ? h('button', { class: 'nb2prod-promote jp-Button', onclick: () => void this.start({ action: 'promote', model: model.name, version: v.version }) }, 'Promote')
              : null
          )
        ),
        h('td', { class: 'nb2prod-aliases' }, v.aliases.join(', ')),
        h('td', { class: 'nb2prod-bentos' }, v.bentos.join(', '))
      )
    );
    const timeline = model.timeline
      .slice()
      .reverse()
      .slice(0, 20)
      .map(e =>
        h(
          'li',
          { class: 'nb2prod-move' },
          `${e.at} ${e.alias}: ${e.from_version ?? '∅'} → ${e.to_version ?? '∅'} (${e.reason}; ${e.actor})`
        )
      );
    return h(
      'div',
      { class: 'nb2prod-model', 'data-model': model.name },
      h(
        'div',
        { class: 'nb2prod-model-head' },
        h('b', {}, link(model.name, model.url)),
        champion ? h('span', { class: 'nb2prod-champion' }, ` champion v${champion}`) : ' no champion',
        h('button', { class: 'nb2prod-rollback jp-Button', onclick: () => void this.start({ action: 'rollback', model: model.name }) }, 'Rollback'),
        h('button', { class: 'nb2prod-report jp-Button', onclick: () => void this.showReport(model.name) }, 'Drift report')
      ),
      h(
        'table',
        { class: 'nb2prod-table' },
        h('thead', {}, h('tr', {}, ...['version', 'aliases', 'in Bento'].map(t => h('th', {}, t)))),
        h('tbody', {}, ...versions)
      ),
      h('div', { class: 'nb2prod-subtitle' }, 'Alias timeline'),
      timeline.length
        ? h('ol', { class: 'nb2prod-timeline', reversed: '' }, ...timeline)
        : h('div', { class: 'nb2prod-empty' }, 'no alias moved yet')
    );
  }

  private renderServices(): void {
    const box = this.node.querySelector('.nb2prod-services-list');
    if (!box) {
      return;
    }
    if (!this.services.length) {
      box.replaceChildren(h('div', { class: 'nb2prod-empty' }, 'No service found: nb2prod serve NAME, or add its URL.'));
      return;
    }
    box.replaceChildren(
      ...this.services.map(s => {
        if (!s.reachable) {
          return h('div', { class: 'nb2prod-service nb2prod-unreachable' }, `${s.url}: not reachable (${s.error ?? ''})`);
        }
        // the metrics of the labelled rows (feedback), with how many there are; none: no line
        const labelled = Number(s.quality.labelled ?? 0);
        const metrics = Object.entries(s.quality)
          .filter(([k, v]) => k !== 'labelled' && typeof v === 'number')
          .map(([k, v]) => `${k}=${Number(v).toPrecision(3)}`)
          .join(' ');
        const quality = labelled > 0 && metrics ? `${metrics} (${labelled} labelled)` : '';
        return h(
          'div',
          { class: 'nb2prod-service', 'data-url': s.url },
          h('b', {}, s.model ?? '?'),
          ` ${s.url} · active v${s.active_version ?? '?'}`,
          s.canary ? ` · canary v${s.canary.version} ${s.canary.percent}%` : '',
          s.requests_per_minute !== null ? ` · ${s.requests_per_minute} req/min` : '',
          h('div', { class: `nb2prod-drift nb2prod-drift-${s.drift_status ?? 'unknown'}` }, `drift: ${s.drift_status ?? 'unknown'}`),
          h(
            'ul',
            { class: 'nb2prod-features' },
            ...s.features.slice(0, 15).map(f =>
              h('li', { class: f.drifted ? 'nb2prod-drifted' : '' }, `${f.name}: PSI ${f.psi === null ? '-' : f.psi.toFixed(3)}${f.drifted ? ' (drifted)' : ''}`)
            )
          ),
          quality ? h('div', { class: 'nb2prod-quality' }, `live quality: ${quality}`) : null
        );
      })
    );
  }

  private addServiceForm(): HTMLElement {
    const input = h('input', { class: 'nb2prod-service-url', placeholder: 'http://127.0.0.1:3000' }) as HTMLInputElement;
    return h(
      'form',
      {
        class: 'nb2prod-add-service',
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          void requestAPI('services', { method: 'POST', body: JSON.stringify({ url: input.value }) })
            .then(() => this.refresh())
            .catch(error => this.actionsBox.prepend(this.errorBox(error)));
        }
      },
      input,
      h('button', { class: 'jp-Button', type: 'submit' }, 'Add service')
    );
  }

  private renderRerun(view: INotebookView): HTMLElement {
    if (!view.parameters) {
      return section('Re-run', 'nb2prod-rerun', h('div', { class: 'nb2prod-empty' }, 'The notebook has no cell tagged "parameters": tag one to re-run it with other values.'));
    }
    const inputs = view.parameters.map(p => {
      const input = h('input', { name: p.name, value: p.default, 'data-type': p.type_name }) as HTMLInputElement;
      return { p, input };
    });
    return section(
      'Re-run',
      'nb2prod-rerun',
      h(
        'form',
        {
          class: 'nb2prod-rerun-form',
          onsubmit: (ev: Event) => {
            ev.preventDefault();
            const parameters: Record<string, string> = {};
            for (const { p, input } of inputs) {
              if (input.value !== p.default) {
                parameters[p.name] = input.value;
              }
            }
            void this.start({ action: 'rerun', path: this.path, parameters });
          }
        },
        ...inputs.map(({ p, input }) =>
          h('label', { class: 'nb2prod-param', title: p.help }, `${p.name} (${p.type_name}) `, input)
        ),
        h('button', { class: 'nb2prod-rerun-button jp-Button', type: 'submit' }, 'Re-run')
      )
    );
  }

  /** Start an action and follow it: progress, cancel, then the result or nb2prod's error. */
  async start(body: Record<string, any>): Promise<void> {
    let action: IAction;
    try {
      action = await requestAPI<IAction>('actions', { method: 'POST', body: JSON.stringify(body) });
    } catch (error) {
      this.actionsBox.prepend(this.errorBox(error));
      return;
    }
    const row = h('div', { class: 'nb2prod-action', 'data-action': action.id, 'data-kind': action.kind });
    this.actionsBox.prepend(row);
    while (true) {
      this.actions.set(action.id, action);
      this.renderAction(row, action);
      if (action.status !== 'running') {
        break;
      }
      await new Promise(resolve => setTimeout(resolve, 500));
      try {
        action = await requestAPI<IAction>(`actions/${action.id}`);
      } catch (error) {
        row.replaceChildren(this.errorBox(error));
        return;
      }
    }
    if (action.status === 'done') {
      await this.refresh();
    }
  }

  private renderAction(row: HTMLElement, action: IAction): void {
    row.dataset.status = action.status;
    const label = `${action.kind}: ${action.status} (${action.elapsed_s.toFixed(0)} s)`;
    const children: Child[] = [h('span', { class: 'nb2prod-action-label' }, label)];
    if (action.status === 'running') {
      children.push(
        h('span', { class: 'nb2prod-progress' }, ` ${action.progress}`),
        h('button', { class: 'nb2prod-cancel jp-Button', onclick: () => void requestAPI(`actions/${action.id}`, { method: 'DELETE' }) }, 'Cancel')
      );
    } else if (action.status === 'failed' && action.error) {
      children.push(
        h(
          'div',
          { class: 'nb2prod-error' },
          h('div', { class: 'nb2prod-error-message' }, `nb2prod: ${action.error.message}`),
          action.error.hint ? h('div', { class: 'nb2prod-error-hint' }, `fix: ${action.error.hint}`) : null
        )
      );
    } else if (action.status === 'done' && action.result) {
      const r = action.result;
      const what = r.tag ? ` ${r.tag}` : r.active ? ` champion v${r.active}` : r.run_id ? ` run ${r.run_id}` : '';
      children.push(h('span', { class: 'nb2prod-result' }, what));
    }
    row.replaceChildren(...(children.filter(c => c) as (Node | string)[]));
  }

  private async showReport(model: string): Promise<void> {
    try {
      const report = await requestAPI<{ html: string }>(`report/${encodeURIComponent(model)}`);
      this.openReport(model, report.html);
    } catch (error) {
      this.actionsBox.prepend(this.errorBox(error));
    }
  }
}
