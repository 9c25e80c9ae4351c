'use strict';
// lanspread browser page. Talks to the control API described in API.md.
//
// Rules this file keeps (the server's CSP and the review rely on them):
// - DOM is built with createElement; text from the API only goes through
//   textContent. There is no innerHTML anywhere.
// - No inline styles in markup; progress is shown with <progress> elements.
// - The auth token lives in an HttpOnly cookie; this script never sees it.

const API = '/api/v1';
const $ = (id) => document.getElementById(id);

// The page's model of the world; the DOM is rendered from it.
const model = {
  games: new Map(), // id -> Game, sorted by name
  peers: [],
  status: null,
  lastDownloads: new Map(), // id -> game-download-finished data, until the next download or removal
  installUpdates: new Map(), // id -> the `update` flag of the running install (from -begin)
  stopped: false, // runtime-stopped came: the stream is over
};

// ---------------------------------------------------------------- labels

const STATE_LABELS = {
  unavailable: 'Unavailable',
  remote: 'On the LAN',
  downloading: 'Downloading',
  downloaded: 'Downloaded',
  installed: 'Installed',
  update_available: 'Update available',
};

// Operations that replace the action buttons with a busy label.
const BUSY_LABELS = {
  installing: 'Installing…',
  updating: 'Updating…',
  uninstalling: 'Uninstalling…',
  removing: 'Removing…',
};

const ACTION_LABELS = {
  get: 'Get', install: 'Install', update: 'Update',
  uninstall: 'Uninstall', remove: 'Remove', cancel: 'Cancel',
};

// ------------------------------------------------------------ formatting

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** Bytes as a human size, base 1024, one decimal ("117.7 MB"). */
function fmtBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '?';
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[i]}`;
}

function fmtRate(bytesPerSec) {
  return `${fmtBytes(bytesPerSec || 0)}/s`;
}

/** A duration as "6 s", "1 min 20 s" or "2 h 5 min". */
function fmtDuration(secs) {
  const s = Math.max(0, Math.ceil(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) {
    const rest = s % 60;
    return rest ? `${Math.floor(s / 60)} min ${rest} s` : `${s / 60} min`;
  }
  const min = Math.floor((s % 3600) / 60);
  return min ? `${Math.floor(s / 3600)} h ${min} min` : `${Math.floor(s / 3600)} h`;
}

const shortId = (id) => String(id || '').slice(0, 8);
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
const nameOf = (id) => (model.games.get(id) || {}).name || id;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// ------------------------------------------------------------------ HTTP

class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** One API call; resolves with the JSON answer, rejects with an ApiError. */
async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError('network', 'the lanspread service cannot be reached', 0);
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* empty or not JSON */ }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(err.code || `http_${res.status}`, err.message || `HTTP ${res.status}`, res.status);
  }
  return data;
}

const errText = (e) => `${e.message} (${e.code})`;

// ----------------------------------------------------- errors and notices

const MAX_ERRORS = 5;
const NOTICE_MS = 6000;

/** Adds a dismissible message to the #errors alert region. */
function showError(text, extra) {
  const box = $('errors');
  const item = el('div', 'msg error');
  item.append(el('span', 'msg-text', text));
  if (extra) item.append(extra);
  const dismiss = el('button', 'dismiss', '×');
  dismiss.type = 'button';
  dismiss.setAttribute('aria-label', 'Dismiss message');
  dismiss.addEventListener('click', () => item.remove());
  item.append(dismiss);
  box.append(item);
  // Old errors pile up during long sessions; keep only the newest few.
  while (box.children.length > MAX_ERRORS) box.firstElementChild.remove();
}

/** A short success note that goes away by itself. */
function showNotice(text, ms = NOTICE_MS) {
  const item = el('p', 'msg notice', text);
  $('notices').append(item);
  setTimeout(() => item.remove(), ms);
}

/** A button offered in the error of a refused install on a hand-made local/. */
function adoptButton(id) {
  const button = el('button', 'adopt', `Adopt files of ${nameOf(id)}`);
  button.type = 'button';
  button.addEventListener('click', async () => {
    try {
      await request('POST', `/games/${encodeURIComponent(id)}/adopt`, {});
      button.closest('.msg').remove();
      showNotice(`Adopting ${nameOf(id)}: the files already there stay yours.`);
      scheduleGamesRefresh();
    } catch (e) {
      showError(`Could not adopt ${nameOf(id)}: ${errText(e)}`);
    }
  });
  return button;
}

function showGameError(prefix, id, code, message) {
  const extra = code === 'not_owned' ? adoptButton(id) : null;
  showError(`${prefix} ${nameOf(id)} failed: ${message} (${code})`, extra);
}

// ---------------------------------------------------------------- header

function renderStatus() {
  const s = model.status;
  if (!s) return;
  $('me').textContent = shortId(s.peer_id);
  $('me').title = s.peer_id;
  $('game-dir').textContent = s.game_dir || 'not set';
  $('peer-count').textContent = String(s.peers);
}

const CONN_LABELS = { live: 'live', reconnecting: 'reconnecting…', stopped: 'stopped' };

function setConn(state) {
  const conn = $('conn');
  conn.dataset.state = state;
  conn.textContent = CONN_LABELS[state] || state;
}

// --------------------------------------------------------------- library

const isDownloading = (g) =>
  g.state === 'downloading' || g.operation === 'resolving' || g.operation === 'downloading';
const isInstalling = (g) => g.operation === 'installing' || g.operation === 'updating';

/** The actions valid for a game now (none while a local operation runs). */
function actionsFor(g) {
  if (isDownloading(g)) return ['cancel'];
  if (g.operation) return [];
  switch (g.state) {
    case 'remote': return ['get'];
    case 'downloaded': return ['install', 'remove'];
    case 'installed': return ['uninstall', 'remove'];
    case 'update_available': return ['update', 'uninstall'];
    default: return [];
  }
}

function findCard(id) {
  for (const card of $('games').children) {
    if (card.dataset.gameId === id) return card;
  }
  return null;
}

function setGames(list) {
  const sorted = [...(list || [])].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  model.games = new Map(sorted.map((g) => [g.id, g]));
  for (const id of [...model.lastDownloads.keys()]) {
    if (!model.games.has(id)) model.lastDownloads.delete(id);
  }
  renderLibrary();
}

/** Rebuilds the grid, keeping keyboard focus on the same game's button. */
function renderLibrary() {
  const focus = rememberFocus();
  const cards = [...model.games.values()].map(buildCard);
  $('games').replaceChildren(...cards);
  $('loading').hidden = true;
  $('empty').hidden = cards.length > 0;
  restoreFocus(focus);
}

/** Rebuilds one card (its shape changed: new state or operation). */
function updateCard(id) {
  const game = model.games.get(id);
  const old = findCard(id);
  if (!game || !old) return;
  const focus = rememberFocus();
  old.replaceWith(buildCard(game));
  if (focus && focus.id === id) restoreFocus(focus);
}

function rememberFocus() {
  const active = document.activeElement;
  const card = active && active.closest ? active.closest('article.game') : null;
  if (!card) return null;
  return { id: card.dataset.gameId, action: active.dataset.action || null };
}

function restoreFocus(focus) {
  if (!focus) return;
  const card = findCard(focus.id);
  if (!card) return;
  const buttons = [...card.querySelectorAll('button[data-action]')];
  // Same action if it is still offered, else the card's first action
  // (e.g. Get became Cancel), else the card itself.
  const target = buttons.find((b) => b.dataset.action === focus.action) || buttons[0] || card;
  target.focus({ preventScroll: true });
}

function buildCard(g) {
  const card = el('article', 'game');
  card.dataset.gameId = g.id;
  card.dataset.state = g.state;
  card.dataset.operation = g.operation || '';
  card.tabIndex = -1; // focus lands here when the card's buttons vanish
  card.append(buildHead(g), buildMeta(g));
  if (g.description) card.append(el('p', 'description', g.description));
  if (g.problems && g.problems.length) card.append(buildProblems(g.problems));
  if (isDownloading(g)) card.append(buildDownload(g));
  if (isInstalling(g)) card.append(buildInstall(g));
  card.append(buildActions(g));
  const last = model.lastDownloads.get(g.id);
  if (last && last.peers && last.peers.length) card.append(buildLastDownload(last));
  return card;
}

function buildHead(g) {
  const head = el('div', 'head');
  head.append(el('h3', 'name', g.name || g.id), el('span', 'badge', STATE_LABELS[g.state] || g.state));
  return head;
}

function versionText(g) {
  if (g.version && g.state === 'update_available' && g.latest_version) {
    return `v${g.version} → ${g.latest_version}`;
  }
  if (g.version) return `v${g.version}`;
  if (g.latest_version) return `v${g.latest_version}`;
  return null;
}

function buildMeta(g) {
  const meta = el('p', 'meta');
  const parts = [
    typeof g.size === 'number' ? fmtBytes(g.size) : null,
    versionText(g),
    g.holders > 0 ? `held by ${plural(g.holders, 'host', 'hosts')}` : null,
    g.genre || null,
  ];
  for (const part of parts) {
    if (part) meta.append(el('span', 'meta-item', part));
  }
  return meta;
}

function buildProblems(problems) {
  const list = el('ul', 'problems');
  list.setAttribute('aria-label', 'Problems');
  for (const p of problems) list.append(el('li', null, p));
  return list;
}

function buildActions(g) {
  const box = el('div', 'actions');
  if (g.operation && BUSY_LABELS[g.operation]) {
    box.append(el('span', 'busy', BUSY_LABELS[g.operation]));
    return box;
  }
  const actions = actionsFor(g);
  if (!actions.length && g.state === 'unavailable') box.append(el('span', 'none', 'nobody has it'));
  for (const action of actions) {
    const button = el('button', action === 'get' || action === 'update' ? 'primary' : null, ACTION_LABELS[action]);
    button.type = 'button';
    button.dataset.action = action;
    button.dataset.gameId = g.id;
    button.setAttribute('aria-label', `${ACTION_LABELS[action]} ${g.name || g.id}`);
    box.append(button);
  }
  return box;
}

// -------------------------------------------------------------- progress

function buildDownload(g) {
  const box = el('div', 'download');
  const overall = el('progress', 'overall');
  overall.setAttribute('aria-label', `Download of ${g.name || g.id}`);
  const waiting = el('p', 'waiting');
  waiting.hidden = true;
  const shares = el('ul', 'peer-shares');
  shares.setAttribute('aria-label', 'Bytes per peer');
  box.append(overall, el('p', 'summary'), waiting, shares);
  fillDownload(box, g);
  return box;
}

function summaryText(p) {
  const parts = [];
  if (p.total > 0) {
    const pct = Math.floor((Math.min(p.done, p.total) / p.total) * 100);
    parts.push(`${fmtBytes(p.done)} of ${fmtBytes(p.total)} (${pct}%)`);
  } else {
    parts.push(fmtBytes(p.done));
  }
  parts.push(fmtRate(p.rate));
  if (typeof p.eta_secs === 'number' && p.rate > 0) parts.push(`${fmtDuration(p.eta_secs)} left`);
  return parts.join(' · ');
}

/** Updates a card's download area in place from game.progress. */
function fillDownload(box, g) {
  const p = g.progress;
  const overall = box.querySelector('progress.overall');
  const waiting = box.querySelector('.waiting');
  const summary = box.querySelector('.summary');
  if (!p) {
    overall.removeAttribute('value'); // indeterminate until numbers come
    summary.textContent = g.operation === 'resolving' ? 'Looking for holders…' : 'Starting…';
    waiting.hidden = true;
    fillPeerShares(box.querySelector('.peer-shares'), [], 0);
    return;
  }
  if (p.total > 0) {
    overall.max = p.total;
    overall.value = Math.min(p.done, p.total);
  } else {
    overall.removeAttribute('value');
  }
  summary.textContent = summaryText(p);
  waiting.hidden = !p.waiting;
  waiting.textContent = p.waiting ? `waiting for holders: ${p.waiting}` : '';
  fillPeerShares(box.querySelector('.peer-shares'), p.peers || [], p.total || p.done);
}

/** One bar per peer: its bytes against the whole download. */
function fillPeerShares(list, shares, total) {
  const seen = new Set();
  for (const share of shares) {
    seen.add(share.peer);
    let item = [...list.children].find((li) => li.dataset.peer === share.peer);
    if (!item) {
      item = buildPeerShare(share.peer);
      list.append(item);
    }
    const bar = item.querySelector('progress');
    bar.max = total > 0 ? total : 1;
    bar.value = total > 0 ? Math.min(share.bytes, total) : 0;
    item.querySelector('.share-text').textContent =
      `${shortId(share.peer)} · ${fmtRate(share.rate)} · ${fmtBytes(share.bytes)}`;
  }
  for (const item of [...list.children]) {
    if (!seen.has(item.dataset.peer)) item.remove();
  }
}

function buildPeerShare(peer) {
  const item = el('li', 'peer-share');
  item.dataset.peer = peer;
  item.title = peer;
  const bar = el('progress');
  bar.setAttribute('aria-label', `Share from peer ${shortId(peer)}`);
  item.append(el('span', 'share-text'), bar);
  return item;
}

// An install's progress: archive bytes unpacked (total may be null).
function buildInstall(g) {
  const box = el('div', 'install-progress');
  const bar = el('progress', 'install');
  const what = g.operation === 'updating' ? 'Update' : 'Install';
  bar.setAttribute('aria-label', `${what} of ${g.name || g.id}`);
  box.append(bar, el('p', 'install-text'));
  fillInstall(box, g);
  return box;
}

function installText(p) {
  if (!p) return 'Starting…';
  if (!(p.total > 0)) return `${fmtBytes(p.done)} unpacked`;
  const pct = Math.floor((Math.min(p.done, p.total) / p.total) * 100);
  return `${pct}% · ${fmtBytes(p.done)} of ${fmtBytes(p.total)}`;
}

/** Updates a card's install area in place from game.progress. */
function fillInstall(box, g) {
  const p = g.progress;
  const bar = box.querySelector('progress.install');
  if (p && p.total > 0) {
    bar.max = p.total;
    bar.value = Math.min(p.done, p.total);
  } else {
    bar.removeAttribute('value'); // indeterminate
  }
  box.querySelector('.install-text').textContent = installText(p);
}

// --------------------------------------------------------- last download

const sharePct = (bytes, total) => (total > 0 ? Math.round((bytes / total) * 100) : 0);

/** "Downloaded from N peers in T", with each peer's share of the whole. */
function buildLastDownload(last) {
  const box = el('div', 'last-download');
  const total = last.peers.reduce((sum, s) => sum + (s.bytes || 0), 0);
  const title = `Downloaded from ${plural(last.peers.length, 'peer', 'peers')} in ${fmtDuration(last.secs || 0)}`;
  box.append(el('p', 'last-summary', title));
  for (const share of last.peers) box.append(buildLastShare(share, total));
  return box;
}

function buildLastShare(share, total) {
  const item = el('div', 'peer-share');
  item.dataset.peer = share.peer;
  item.title = share.peer;
  const bar = el('progress');
  bar.max = total > 0 ? total : 1;
  bar.value = total > 0 ? Math.min(share.bytes || 0, total) : 0;
  bar.setAttribute('aria-label', `Share from peer ${shortId(share.peer)}`);
  const text = `${shortId(share.peer)} · ${sharePct(share.bytes, total)}% · ${fmtBytes(share.bytes)}`;
  item.append(el('span', 'share-text', text), bar);
  return item;
}

function blankProgress(total, peers) {
  return {
    done: 0, total: total == null ? null : total, rate: 0, eta_secs: null, waiting: null,
    peers: (peers || []).map((peer) => ({ peer, bytes: 0, rate: 0 })),
  };
}

// ----------------------------------------------------------------- peers

function buildPeer(p) {
  const item = el('li', 'peer');
  item.dataset.peer = p.id;
  const id = el('code', 'peer-id', shortId(p.id));
  id.title = p.id;
  item.append(id, el('span', 'peer-addr', p.addr), el('span', 'peer-games', plural(p.games, 'game', 'games')));
  return item;
}

function renderPeers() {
  $('peer-list').replaceChildren(...model.peers.map(buildPeer));
  $('peers-empty').hidden = model.peers.length > 0;
}

// ------------------------------------------------------------- loading

async function loadStatus() {
  model.status = await request('GET', '/status');
  renderStatus();
}

async function loadGames() {
  const data = await request('GET', '/games');
  setGames(data.games);
}

async function loadPeers() {
  const data = await request('GET', '/peers');
  model.peers = data.peers || [];
  renderPeers();
}

// Background refreshes stay quiet on failure: the connection indicator
// already says when the service is away, and the next event retries.
const quietly = (fn) => () => fn().catch((e) => console.warn('lanspread refresh:', e));
const scheduleGamesRefresh = debounce(quietly(loadGames), 200);
const schedulePeersRefresh = debounce(quietly(loadPeers), 250);

// --------------------------------------------------------------- actions

const pending = new Set(); // "id:action" requests in flight, against double clicks

async function runAction(id, action) {
  const key = `${id}:${action}`;
  if (pending.has(key)) return;
  pending.add(key);
  try {
    await request('POST', `/games/${encodeURIComponent(id)}/${action}`, {});
    // The event stream tells the rest; a refresh covers a missed event.
    scheduleGamesRefresh();
  } catch (e) {
    actionFailed(id, action, e);
  } finally {
    pending.delete(key);
  }
}

function actionFailed(id, action, e) {
  if (action === 'cancel' && e.code === 'not_running') {
    showNotice(`Nothing to cancel for ${nameOf(id)}: it already ended.`);
    scheduleGamesRefresh();
    return;
  }
  const extra = e.code === 'not_owned' ? adoptButton(id) : null;
  showError(`Could not ${action} ${nameOf(id)}: ${errText(e)}`, extra);
}

function onGridClick(event) {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const card = button.closest('article.game');
  if (card) runAction(card.dataset.gameId, button.dataset.action);
}

// ---------------------------------------------------------------- events

/** Sets a game's running operation from a *-begin event. */
function beginOperation(id, operation, progress) {
  const game = model.games.get(id);
  if (!game) { scheduleGamesRefresh(); return; }
  game.operation = operation;
  game.progress = progress || null;
  updateCard(id);
}

/** Clears the operation after *-finished / *-failed, then re-syncs. */
function endOperation(id) {
  const game = model.games.get(id);
  if (game) {
    game.operation = null;
    game.progress = null;
    updateCard(id);
  }
  scheduleGamesRefresh();
}

function onProgress(d) {
  const game = model.games.get(d.id);
  if (!game) return;
  game.progress = d.progress;
  const box = isDownloading(game) ? findCard(d.id)?.querySelector('.download') : null;
  if (box) {
    fillDownload(box, game); // the common, cheap path: 4 a second per game
  } else {
    game.operation = game.operation || 'downloading';
    updateCard(d.id);
  }
}

function onInstallProgress(d) {
  const game = model.games.get(d.id);
  if (!game) return;
  game.progress = d.progress;
  const box = isInstalling(game) ? findCard(d.id)?.querySelector('.install-progress') : null;
  if (box) {
    fillInstall(box, game);
  } else {
    game.operation = model.installUpdates.get(d.id) ? 'updating' : 'installing';
    updateCard(d.id);
  }
}

function onWaiting(d) {
  const game = model.games.get(d.id);
  if (!game) return;
  game.progress = Object.assign(game.progress || blankProgress(null, []), { waiting: d.reason });
  const box = findCard(d.id)?.querySelector('.download');
  if (box) fillDownload(box, game);
  else updateCard(d.id);
}

function onFailed(label, d) {
  // The failed event of an install does not say whether it was an update:
  // -begin did.
  const what = label === 'Install' && model.installUpdates.get(d.id) ? 'Update' : label;
  if (label === 'Install') model.installUpdates.delete(d.id);
  endOperation(d.id);
  if (d.code === 'cancelled') showNotice(`${what} of ${nameOf(d.id)} cancelled.`);
  else showGameError(`${what} of`, d.id, d.code, d.message);
}

function onDownloadBegin(d) {
  model.lastDownloads.delete(d.id);
  beginOperation(d.id, 'downloading', blankProgress(d.total, d.peers));
}

function onDownloadFinished(d) {
  model.lastDownloads.set(d.id, { peers: d.peers || [], secs: d.secs, bytes: d.bytes });
  endOperation(d.id);
  showNotice(`${nameOf(d.id)} downloaded: ${fmtBytes(d.bytes)} in ${fmtDuration(d.secs || 0)}.`);
}

function onInstallBegin(d) {
  model.installUpdates.set(d.id, Boolean(d.update));
  beginOperation(d.id, d.update ? 'updating' : 'installing');
}

/** The installed version is in the games-list-updated just before. */
function onInstallFinished(d) {
  const update = model.installUpdates.get(d.id);
  model.installUpdates.delete(d.id);
  endOperation(d.id);
  const version = (model.games.get(d.id) || {}).version;
  const name = nameOf(d.id);
  if (update) showNotice(version ? `${name} updated to ${version}.` : `${name} updated.`);
  else showNotice(version ? `${name} ${version} installed.` : `${name} installed.`);
}

function onRemoveFinished(d) {
  model.lastDownloads.delete(d.id);
  endOperation(d.id);
  showNotice(`${nameOf(d.id)} removed.`);
}

const KEPT_NOTICE_MS = 30000; // a path to note down: leave it up longer

function onFilesKept(d) {
  showNotice(`Your files in ${nameOf(d.id)} were kept in ${d.kept}.`, KEPT_NOTICE_MS);
}

const HANDLERS = {
  'games-list-updated': (d) => setGames(d.games),

  'game-download-begin': onDownloadBegin,
  'game-download-progress': onProgress,
  'game-download-waiting': onWaiting,
  'game-download-finished': onDownloadFinished,
  'game-download-failed': (d) => onFailed('Download', d),

  'game-install-begin': onInstallBegin,
  'game-install-progress': onInstallProgress,
  'game-install-finished': onInstallFinished,
  'game-install-failed': (d) => onFailed('Install', d),
  'game-files-kept': onFilesKept,

  'game-uninstall-begin': (d) => beginOperation(d.id, 'uninstalling'),
  'game-uninstall-finished': (d) => { endOperation(d.id); showNotice(`${nameOf(d.id)} uninstalled.`); },
  'game-uninstall-failed': (d) => onFailed('Uninstall', d),

  'game-remove-begin': (d) => beginOperation(d.id, 'removing'),
  'game-remove-finished': onRemoveFinished,
  'game-remove-failed': (d) => onFailed('Removal', d),

  'peer-joined': () => schedulePeersRefresh(),
  'peer-left': () => schedulePeersRefresh(),
  'peer-banned': (d) => {
    showNotice(`Peer ${shortId(d.peer)} banned: ${d.reason}`);
    schedulePeersRefresh();
  },
  'peer-count': (d) => {
    if (model.status) {
      model.status.peers = d.count;
      renderStatus();
    }
    schedulePeersRefresh();
  },
  'runtime-failure': (d) => showError(`lanspread failed: ${d.message} (${d.code})`),
  'runtime-stopped': onStopped,
};

function dispatch(name, handler, event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (e) {
    console.warn(`lanspread: bad ${name} event`, e);
    return;
  }
  try {
    handler(data);
  } catch (e) {
    console.error(`lanspread: ${name} handler`, e);
  }
}

let retryMs = 1000;
let everOpened = false;
let source = null; // the open EventSource

function reloadButton() {
  const button = el('button', 'reload', 'Reload page');
  button.type = 'button';
  button.addEventListener('click', () => window.location.reload());
  return button;
}

/** The peer stopped and the stream ends: say so once, and stay quiet. */
function onStopped() {
  model.stopped = true;
  if (source) source.close(); // no automatic reconnect to a stopped peer
  setConn('stopped');
  showError('lanspread stopped: the service no longer runs. Restart it, then reload this page.', reloadButton());
}

function connectEvents() {
  if (model.stopped) return;
  source = new EventSource(`${API}/events`);
  source.onopen = () => {
    setConn('live');
    retryMs = 1000;
    // After a gap, the stream replays games; status and peers are not replayed.
    if (everOpened) {
      quietly(loadStatus)();
      schedulePeersRefresh();
    }
    everOpened = true;
  };
  source.onerror = onStreamError;
  for (const [name, handler] of Object.entries(HANDLERS)) {
    source.addEventListener(name, (event) => dispatch(name, handler, event));
  }
}

function onStreamError() {
  if (model.stopped) return;
  setConn('reconnecting');
  // The browser retries by itself unless the stream is closed for good
  // (e.g. a 401 after a server restart); then retry by hand, backing off.
  if (source.readyState === EventSource.CLOSED) {
    source.close();
    setTimeout(connectEvents, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }
}

// -------------------------------------------------------------- settings

function setSettingsError(text) {
  $('settings-error').textContent = text || '';
}

async function openSettings() {
  const dialog = $('settings');
  const input = $('game-dir-input');
  const known = (model.status && model.status.game_dir) || '';
  setSettingsError('');
  $('settings-current').textContent = known || 'not set';
  input.value = known;
  dialog.showModal();
  input.focus();
  input.select();
  try {
    const data = await request('GET', '/settings');
    $('settings-current').textContent = data.game_dir || 'not set';
    // Do not overwrite what the user started typing meanwhile.
    if (input.value === known) input.value = data.game_dir || '';
  } catch (e) {
    setSettingsError(`Could not read the settings: ${errText(e)}`);
  }
}

let saving = false;

async function saveSettings(event) {
  event.preventDefault(); // never let the form navigate (CSP: form-action 'none')
  if (saving) return;
  const input = $('game-dir-input');
  const path = input.value.trim();
  if (!path) {
    setSettingsError('Enter the path of a directory.');
    input.focus();
    return;
  }
  saving = true;
  $('settings-save').setAttribute('aria-busy', 'true');
  try {
    const data = await request('PUT', '/settings/game-dir', { path });
    if (model.status) model.status.game_dir = data.game_dir;
    $('game-dir').textContent = data.game_dir || 'not set';
    $('settings').close();
    showNotice(`Game directory set to ${data.game_dir}.`);
    scheduleGamesRefresh();
  } catch (e) {
    setSettingsError(`Could not change the game directory: ${errText(e)}`);
    input.focus();
  } finally {
    saving = false;
    $('settings-save').removeAttribute('aria-busy');
  }
}

function wireSettings() {
  $('settings-open').addEventListener('click', openSettings);
  $('settings-form').addEventListener('submit', saveSettings);
  $('settings-cancel').addEventListener('click', () => $('settings').close());
  // Esc closes the dialog natively; either way focus goes back to its opener.
  $('settings').addEventListener('close', () => $('settings-open').focus());
}

// ------------------------------------------------------------------ start

async function start() {
  $('games').addEventListener('click', onGridClick);
  wireSettings();
  const loads = [
    ['status', loadStatus],
    ['games', loadGames],
    ['peers', loadPeers],
  ];
  await Promise.all(loads.map(([what, load]) =>
    load().catch((e) => showError(`Could not load ${what}: ${errText(e)}`))));
  connectEvents();
}

document.addEventListener('DOMContentLoaded', start);
