// Drives JupyterLab in Debian's chromium through playwright-core for tests/browser/test_lab.py.
// Usage: node lab.mjs CONFIG.json  (CONFIG: {url, token, out, chromium, scenarios, ...}); prints one JSON
// object of what it saw on stdout; screenshots go to CONFIG.out. Exit code 1 on a failed step
// (the JSON then has "error" and the step), with a screenshot of the page at that moment.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run'
];
const seen = { steps: [] };
let step = 'launch';
// the notebook on show (the others' panels stay in the DOM, hidden)
const SHOWN = '.jp-NotebookPanel:not(.lm-mod-hidden)';

async function shot(page, name) {
  const path = join(config.out, `${name}.png`);
  await page.screenshot({ path });
  (seen.screenshots ||= []).push(path);
}

async function openNotebook(page, path, heading) {
  step = `open ${path}`;
  await page.goto(`${config.url}/lab/tree/${path}?reset&token=${config.token}`);
  await page.waitForSelector(`${SHOWN} .jp-Cell`, { timeout: 60000 });
  if (heading) {
    await page.waitForSelector(`${SHOWN} .jp-RenderedMarkdown h2`, { timeout: 30000 });
  }
  seen.steps.push(step);
}

async function openPanel(page) {
  step = 'open the nb2prod panel';
  const started = Date.now();
  await page.click('.jp-SideBar .lm-TabBar-tab[data-id="nb2prod-panel"]');
  await page.waitForSelector('#nb2prod-panel[data-state="ready"]', { timeout: 60000 });
  seen.panel_open_ms = Date.now() - started;
  seen.paint_ms = Number(await page.getAttribute('#nb2prod-panel', 'data-paint-ms'));
  seen.steps.push(step);
}

const texts = (page, selector) =>
  page.$$eval(selector, els => els.map(e => e.textContent.trim()));

async function actionDone(page, kind, count, timeout) {
  // the count-th action of that kind (newest first in the list) has finished
  await page.waitForFunction(
    ([k, n]) => {
      const rows = [...document.querySelectorAll(`.nb2prod-action[data-kind="${k}"]`)];
      return rows.length >= n && rows[0].dataset.status !== 'running';
    },
    [kind, count],
    { timeout }
  );
  const row = await page.$(`.nb2prod-action[data-kind="${kind}"]`);
  return { status: await row.getAttribute('data-status'), text: (await row.textContent()).trim() };
}

async function panelScenario(page) {
  await openNotebook(page, config.notebook, false);
  await openPanel(page);
  seen.runs_before = await texts(page, '.nb2prod-run');
  seen.versions_before = await page.$$eval('tr.nb2prod-version', els => els.map(e => e.dataset.version));
  await shot(page, '01-panel');

  step = 're-run with C=2.0 from the parameters form';
  await page.fill('.nb2prod-rerun-form input[name="C"]', '2.0');
  await page.click('.nb2prod-rerun-button');
  seen.rerun = await actionDone(page, 'rerun', 1, 240000);
  await page.waitForSelector('tr.nb2prod-version[data-version="2"]', { timeout: 30000 });
  seen.runs_after_rerun = await texts(page, '.nb2prod-run');
  seen.steps.push(step);
  await shot(page, '02-rerun');

  step = 'export version 2';
  await page.click('tr.nb2prod-version[data-version="2"] button.nb2prod-export');
  seen.export = await actionDone(page, 'export', 1, 240000);
  await page.waitForFunction(
    () => document.querySelector('tr.nb2prod-version[data-version="2"] td.nb2prod-bentos')?.textContent.trim(),
    null,
    { timeout: 30000 }
  );
  seen.bentos_v2 = (await page.textContent('tr.nb2prod-version[data-version="2"] td.nb2prod-bentos')).trim();
  seen.steps.push(step);
  await shot(page, '03-exported');

  step = 'promote version 2';
  seen.timeline_before = await texts(page, '.nb2prod-model[data-model="tiny"] li.nb2prod-move');
  await page.click('tr.nb2prod-version[data-version="2"] button.nb2prod-promote');
  seen.promote = await actionDone(page, 'promote', 1, 120000);
  await page.waitForFunction(
    n => document.querySelectorAll('.nb2prod-model[data-model="tiny"] li.nb2prod-move').length > n,
    seen.timeline_before.length,
    { timeout: 30000 }
  );
  seen.timeline_after = await texts(page, '.nb2prod-model[data-model="tiny"] li.nb2prod-move');
  seen.aliases_v2 = (await page.textContent('tr.nb2prod-version[data-version="2"] td.nb2prod-aliases')).trim();
  seen.steps.push(step);
  await shot(page, '04-promoted');

  step = 'no Promote button on the champion';
  const champion = await page.$('tr.nb2prod-version[data-version="2"] button.nb2prod-promote');
  seen.promote_button_on_champion = champion !== null;
  seen.steps.push(step);

  step = 'a rollback with no earlier champion: the one-line error and its fix';
  await page.click('.nb2prod-model[data-model="tiny"] button.nb2prod-rollback');
  seen.rollback = await actionDone(page, 'rollback', 1, 120000);
  seen.rollback_error = await texts(page, '.nb2prod-action[data-kind="rollback"] .nb2prod-error > div');
  seen.steps.push(step);
  await shot(page, '05-rollback-refused');
}

// The services section: a served model with its drift, a service added by URL that does not
// answer, and the model's drift report in a main-area tab.
async function servicesScenario(page) {
  await openNotebook(page, config.notebook, false);
  await openPanel(page);
  step = 'the served model in the services section, drifted feature first';
  const served = `.nb2prod-service[data-url="${config.service_url}"]`;
  await page.waitForSelector(`${served} .nb2prod-drift`, { timeout: 30000 });
  seen.service = (await page.textContent(served)).trim();
  seen.service_drift = (await page.textContent(`${served} .nb2prod-drift`)).trim();
  seen.service_features = await texts(page, `${served} .nb2prod-features li`);
  seen.service_drifted = await texts(page, `${served} .nb2prod-features li.nb2prod-drifted`);
  seen.steps.push(step);
  await shot(page, '06-services');

  step = 'add a service by its URL: one that does not answer says so';
  await page.fill('.nb2prod-add-service input.nb2prod-service-url', config.unreachable_url);
  await page.click('.nb2prod-add-service button[type="submit"]');
  await page.waitForFunction(
    url => [...document.querySelectorAll('.nb2prod-service.nb2prod-unreachable')].some(e => e.textContent.startsWith(url)),
    config.unreachable_url,
    { timeout: 30000 }
  );
  seen.unreachable = await texts(page, '.nb2prod-service.nb2prod-unreachable');
  seen.services_after_add = await page.$$eval('.nb2prod-service', els => els.length);
  seen.steps.push(step);
  await shot(page, '07-service-added');

  step = "open the model's drift report";
  await page.click('.nb2prod-model[data-model="tiny"] button.nb2prod-report');
  const frame = await (await page.waitForSelector('#nb2prod-report-tiny iframe', { timeout: 60000 })).contentFrame();
  await frame.waitForSelector('body', { timeout: 30000 });
  seen.report_tab = (await page.textContent("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel"))?.trim();
  seen.report_sandbox = await page.getAttribute('#nb2prod-report-tiny iframe', 'sandbox');
  seen.report_text = (await frame.textContent('body')).replace(/\s+/g, ' ').trim().slice(0, 4000);
  seen.steps.push(step);
  await shot(page, '08-drift-report');
}

// Computed styles of the first markdown h2 and of the page, as the user sees them.
async function headingStyle(page) {
  return page.evaluate(shown => {
    const h2 = document.querySelector(`${shown} .jp-RenderedMarkdown h2`);
    const s = getComputedStyle(h2);
    const b = getComputedStyle(document.body);
    return {
      heading: {
        textDecorationLine: s.textDecorationLine,
        borderBottomStyle: s.borderBottomStyle,
        borderBottomWidth: s.borderBottomWidth,
        fontSize: s.fontSize,
        fontWeight: s.fontWeight,
        color: s.color,
        marginTop: s.marginTop,
        paddingBottom: s.paddingBottom
      },
      body: { maxWidth: b.maxWidth, margin: b.margin, fontFamily: b.fontFamily, fontSize: b.fontSize }
    };
  }, SHOWN);
}

async function stylesScenario(page) {
  const out = {};
  for (const [name, path] of Object.entries(config.notebooks)) {
    await openNotebook(page, path, true);
    if (name !== 'plain') {
      step = `wait for the HTML output of ${path}`;
      await page.waitForSelector(`${SHOWN} .jp-OutputArea-output[data-mime-type="text/html"]`, { timeout: 30000 });
    }
    out[name] = await headingStyle(page);
    out[name].output_html = await page.$$eval(`${SHOWN} .jp-OutputArea-output[data-mime-type="text/html"]`, els => els.length);
    await shot(page, `styles-${name}`);
  }
  seen.styles = out;
}

// First paint of the panel, notebooks in interleaved rounds (bench/bench_panel.py).
async function paintScenario(page) {
  seen.paint = {};
  for (let round = 0; round < config.rounds; round++) {
    const names = Object.keys(config.notebooks);
    const order = round % 2 ? names.reverse() : names;
    for (const name of order) {
      await openNotebook(page, config.notebooks[name], false);
      await openPanel(page);
      (seen.paint[name] ||= []).push({ paint_ms: seen.paint_ms, open_ms: seen.panel_open_ms, rows: await page.$$eval('.nb2prod-run', r => r.length), versions: await page.$$eval('tr.nb2prod-version', r => r.length) });
    }
  }
  await shot(page, 'paint-last');
}

const browser = await chromium.launch({ executablePath: config.chromium, args: FLAGS, headless: true });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
let code = 0;
try {
  for (const scenario of config.scenarios) {
    if (scenario === 'panel') {
      await panelScenario(page);
    } else if (scenario === 'paint') {
      await paintScenario(page);
    } else if (scenario === 'services') {
      await servicesScenario(page);
    } else if (scenario === 'styles') {
      await stylesScenario(page);
    } else {
      throw new Error(`unknown scenario ${scenario}`);
    }
  }
} catch (error) {
  code = 1;
  seen.error = String(error && error.message ? error.message : error).slice(0, 2000);
  seen.failed_step = step;
  try {
    seen.panel_text = (await page.textContent('#nb2prod-panel')) ?? null;
    await shot(page, 'failure');
  } catch {
    // the page is gone: nothing more to show
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(seen) + '\n');
process.exit(code);
