/**
 * nb2prod-lab: a left side panel showing, for the active notebook, what production knows
 * about it (runs, datasets, models, services) and the actions that move it along.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { Nb2ProdPanel } from './panel';

const ICON = new LabIcon({
  name: 'nb2prod:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><path class="jp-icon3" fill="#616161" d="M4 4h7v7H4zm9 0h7v4h-7zm0 6h7v10h-7zM4 13h7v7H4z"/></svg>'
});

const COMMAND_OPEN = 'nb2prod:open-panel';

/** The drift report in a main-area tab: a sandboxed iframe (no script, no same origin). */
function reportWidget(model: string, html: string): MainAreaWidget {
  const content = new Widget();
  content.addClass('nb2prod-report');
  const frame = document.createElement('iframe');
  frame.setAttribute('sandbox', '');
  frame.setAttribute('title', `drift report of ${model}`);
  frame.srcdoc = html;
  frame.style.width = '100%';
  frame.style.height = '100%';
  frame.style.border = '0';
  content.node.append(frame);
  const widget = new MainAreaWidget({ content });
  widget.id = `nb2prod-report-${model}`;
  widget.title.label = `Drift: ${model}`;
  widget.title.closable = true;
  return widget;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nb2prod-lab:plugin',
  description: 'nb2prod: runs, models, aliases and served services of the open notebook.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, labShell: ILabShell | null) => {
    const panel = new Nb2ProdPanel((model, html) => {
      const widget = reportWidget(model, html);
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
    });
    panel.title.icon = ICON;
    app.shell.add(panel, 'left', { rank: 900 });

    const follow = () => panel.setNotebook(tracker.currentWidget?.context.path ?? null);
    tracker.currentChanged.connect(follow);
    labShell?.currentChanged.connect(() => {
      if (tracker.currentWidget) {
        follow();
      }
    });
    follow();

    app.commands.addCommand(COMMAND_OPEN, {
      label: 'Show the nb2prod panel',
      execute: () => {
        app.shell.activateById(panel.id);
        void panel.refresh();
      }
    });
  }
};

export default plugin;
