/* global uPlot, localStorage, ResizeObserver */
/**
 * rmq broker dashboard: polls /v1/nodes, /v1/alerts and /v1/history and
 * renders them. Signing in posts a monitor or admin token once to
 * /dashboard/session, which answers with an HttpOnly session cookie: the
 * page never keeps the token, and no token is ever in a URL. Every value that came from a node (ids, messages, numbers)
 * reaches the page through textContent or attribute setters only, never as
 * HTML. No build step: this file is served as is.
 */
;(function () {
  'use strict'

  const POLL_MS = 2000
  // Where an older dashboard kept the token: removed on load.
  const OLD_TOKEN_KEY = 'rmq.dashboard.token'
  const HEALTH_ORDER = { stale: 0, 'never-synced': 1, 'holding-back': 2, behind: 3, 'never-seen': 4, ok: 5 }

  const state = {
    nodes: [],
    sort: { key: 'health', dir: 1 },
    filter: '',
    history: [],
    lastT: 0,
    seenContact: new Map(),
    charts: {},
    timer: null,
    failures: 0,
  }

  const $ = (id) => document.getElementById(id)

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat('en-US')
  function fmtInt(n) {
    return n === null || n === undefined ? '–' : nf.format(n)
  }
  function fmtAge(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–'
    const s = Math.max(0, Math.round(ms / 1000))
    if (s < 60) return s + 's'
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's'
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm'
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h'
  }
  /** A configured limit: 5m, 4s, 1h (exact units when they fit). */
  function fmtLimit(ms) {
    for (const [u, f] of [
      ['d', 86400000],
      ['h', 3600000],
      ['m', 60000],
      ['s', 1000],
    ])
      if (ms >= f && ms % f === 0) return ms / f + u
    return fmtAge(ms)
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return '–'
    const u = ['B', 'KB', 'MB', 'GB', 'TB']
    let i = 0
    while (n >= 1024 && i < u.length - 1) {
      n /= 1024
      i++
    }
    return (i === 0 ? n : n.toFixed(n >= 10 ? 0 : 1)) + ' ' + u[i]
  }
  function fmtRate(r) {
    if (r === null || r === undefined) return '–'
    return r >= 100 ? nf.format(Math.round(r)) : r.toFixed(r >= 10 ? 1 : 2)
  }
  function fmtSkew(ms) {
    if (ms === null || ms === undefined) return '–'
    const a = Math.abs(ms)
    const sign = ms < 0 ? '−' : '+'
    if (a < 1000) return sign + a + 'ms'
    return sign + fmtAge(a)
  }
  function fmtPct(x) {
    return x === null || x === undefined ? '–' : (x * 100).toFixed(x >= 0.995 ? 0 : 1) + '%'
  }

  /** An element with text content only (never HTML). */
  function el(tag, cls, text) {
    const e = document.createElement(tag)
    if (cls) e.className = cls
    if (text !== undefined && text !== null) e.textContent = String(text)
    return e
  }

  // ---------- auth ----------
  function forgetOldToken() {
    try {
      localStorage.removeItem(OLD_TOKEN_KEY)
    } catch {
      // storage may be disabled
    }
  }
  function showAuth(message) {
    $('auth').classList.remove('hidden')
    $('auth-error').textContent = message || ''
    setConn('auth', 'sign-in required')
  }
  function hideAuth() {
    $('auth').classList.add('hidden')
    $('auth-error').textContent = ''
  }

  class AuthError extends Error {}

  /** A GET of the broker's API with the session cookie (same origin). */
  async function api(path) {
    const res = await fetch(path, {
      headers: { accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
    })
    if (res.status === 401) {
      const body = await res.json().catch(() => ({}))
      const error = String(body.error || '')
      throw new AuthError(body.code === 'UNAUTHORIZED' && !error.includes('session') ? '' : error)
    }
    if (res.status === 403) throw new AuthError((await res.json().catch(() => ({}))).error || 'forbidden')
    if (!res.ok) throw new Error(path + ': HTTP ' + res.status)
    return res.json()
  }

  /** Trade a token for a session cookie; the error to show, or '' when signed in. */
  async function signIn(token) {
    const res = await fetch('/dashboard/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
      body: JSON.stringify({ token }),
    })
    if (res.ok) return ''
    const body = await res.json().catch(() => ({}))
    return body.error || 'sign-in failed (HTTP ' + res.status + ')'
  }

  function setConn(kind, text) {
    $('conn').dataset.state = kind
    $('conn-text').textContent = text
  }

  // ---------- overview ----------
  function renderSummary(fleet, alerts, last) {
    const s = fleet.summary
    for (const k of ['total', 'ok', 'behind', 'holding-back', 'stale', 'never-seen', 'never-synced'])
      $('c-' + k).textContent = fmtInt(s[k] || 0)
    $('c-alerts').textContent = fmtInt(alerts.active.length)
    document.querySelector('.card.stale').classList.toggle('hot', s.stale > 0)
    document.querySelector('.card.behind').classList.toggle('hot', s.behind > 0)
    document.querySelector('.card.holding-back').classList.toggle('hot', s['holding-back'] > 0)
    document.querySelector('.card.never-synced').classList.toggle('hot', s['never-synced'] > 0)
    document.querySelector('.card.alerts-card').classList.toggle('hot', alerts.active.length > 0)
    $('c-rate').textContent = last ? fmtRate(last.rate) : '–'
    const backlog = fleet.nodes.reduce((t, n) => t + n.backlog.pending, 0)
    $('c-backlog').textContent = fmtInt(backlog)
    $('rules').textContent =
      'stale after ' +
      fmtLimit(fleet.rules.staleAfter) +
      ' without sync · behind when oldest pending > ' +
      fmtLimit(fleet.rules.behindAfter) +
      (fleet.rules.neverSyncedAfter > 0
        ? ' · never synced ' + fmtLimit(fleet.rules.neverSyncedAfter) + ' after its token'
        : '')
  }

  // ---------- alerts ----------
  function alertItem(a, now, resolved) {
    const li = el('li')
    li.dataset.rule = a.rule
    li.dataset.node = a.node
    li.dataset.state = a.state
    li.appendChild(
      el('span', 'sev ' + (resolved ? 'resolved' : a.severity), resolved ? 'resolved' : a.severity),
    )
    li.appendChild(el('span', 'rule', a.rule))
    const node = el('span', 'node', a.node)
    node.title = a.node
    li.appendChild(node)
    li.appendChild(el('span', 'msg', a.message))
    const when = resolved
      ? 'resolved ' + fmtAge(now - a.resolvedAt) + ' ago · lasted ' + fmtAge(a.resolvedAt - a.firedAt)
      : 'since ' + fmtAge(now - a.firedAt)
    li.appendChild(el('span', 'when', when))
    return li
  }
  function renderAlerts(alerts) {
    const list = $('alerts-list')
    const items = alerts.active.map((a) => alertItem(a, alerts.now, false))
    if (items.length === 0) items.push(el('li', 'none', 'No active alerts.'))
    list.replaceChildren(...items)
    const resolved = alerts.resolved.slice(0, 20)
    $('resolved-count').textContent = '(' + alerts.resolved.length + ')'
    $('resolved-list').replaceChildren(
      ...(resolved.length
        ? resolved.map((a) => alertItem(a, alerts.now, true))
        : [el('li', 'none', 'Nothing resolved recently.')]),
    )
    $('alerts-note').textContent = alerts.active.length ? alerts.active.length + ' firing' : 'all quiet'
  }

  // ---------- nodes table ----------
  function sortValue(n, key) {
    switch (key) {
      case 'health':
        return HEALTH_ORDER[n.health] ?? 9
      case 'pending':
        return n.backlog.pending
      case 'loss':
        return n.dropped + n.expired
      case 'storage':
        return n.storage ? n.storage.totalBytes / Math.max(1, n.storage.maxBytes) : -1
      case 'node':
        return n.node
      default: {
        const v = n[key]
        return v === null || v === undefined ? -Infinity : v
      }
    }
  }
  function sorted(nodes) {
    const { key, dir } = state.sort
    const f = state.filter.toLowerCase()
    return nodes
      .filter((n) => !f || n.node.toLowerCase().includes(f) || n.health.includes(f))
      .sort((a, b) => {
        const x = sortValue(a, key)
        const y = sortValue(b, key)
        if (x < y) return -dir
        if (x > y) return dir
        return a.node < b.node ? -1 : a.node > b.node ? 1 : 0
      })
  }
  function cell(text, cls, title) {
    const td = el('td', cls, text)
    if (title) td.title = title
    return td
  }
  function renderNodes() {
    const body = $('nodes-body')
    const rows = sorted(state.nodes).map((n) => {
      const tr = el('tr')
      tr.dataset.node = n.node
      tr.dataset.health = n.health
      const prev = state.seenContact.get(n.node)
      if (prev !== undefined && n.lastContact !== null && n.lastContact > prev) tr.classList.add('flash')
      state.seenContact.set(n.node, n.lastContact)
      tr.appendChild(cell(n.node, 'node', n.node + (n.epoch ? '\nepoch ' + n.epoch : '')))
      const h = el('td')
      h.appendChild(el('span', 'badge ' + n.health, n.health))
      if (n.reasons && n.reasons.length) h.title = n.reasons.join('\n')
      tr.appendChild(h)
      tr.appendChild(
        cell(
          n.sinceContact === null ? 'never' : fmtAge(n.sinceContact) + ' ago',
          'num since',
          n.lastContact
            ? new Date(n.lastContact).toISOString()
            : n.tokenCreatedAt
              ? 'token created ' + new Date(n.tokenCreatedAt).toISOString()
              : '',
        ),
      )
      tr.appendChild(cell(fmtPct(n.successRate), 'num'))
      tr.appendChild(cell(fmtInt(n.backlog.pending), 'num', fmtBytes(n.backlog.bytes)))
      tr.appendChild(cell(n.backlogAge === null ? '–' : fmtAge(n.backlogAge), 'num age'))
      tr.appendChild(cell(fmtInt(n.received), 'num'))
      tr.appendChild(cell(fmtInt(n.duplicates), 'num'))
      tr.appendChild(cell(fmtInt(n.late), 'num'))
      tr.appendChild(cell(fmtSkew(n.clockSkew), 'num'))
      const loss = n.dropped + n.expired
      const lossTd = cell(
        fmtInt(loss),
        'num' + (loss > 0 ? ' warn' : ''),
        n.dropped + ' dropped, ' + n.expired + ' expired',
      )
      tr.appendChild(lossTd)
      const st = el('td', 'num')
      if (n.storage && n.storage.maxBytes > 0) {
        const frac = Math.min(1, n.storage.totalBytes / n.storage.maxBytes)
        st.appendChild(document.createTextNode(fmtBytes(n.storage.totalBytes)))
        const bar = el('span', 'bar' + (frac > 0.8 ? ' high' : ''))
        const fill = el('span')
        fill.style.width = (frac * 100).toFixed(1) + '%'
        bar.appendChild(fill)
        st.appendChild(bar)
        st.title = fmtBytes(n.storage.totalBytes) + ' of ' + fmtBytes(n.storage.maxBytes)
      } else st.textContent = '–'
      tr.appendChild(st)
      return tr
    })
    body.replaceChildren(...rows)
    $('nodes-empty').classList.toggle('hidden', state.nodes.length > 0)
    for (const th of document.querySelectorAll('#nodes th')) {
      if (th.dataset.key === state.sort.key)
        th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending')
      else th.removeAttribute('aria-sort')
    }
  }

  // ---------- charts ----------
  function chartOpts(el, series, colors) {
    const axis = {
      stroke: '#7d8896',
      grid: { stroke: 'rgba(125,136,150,0.12)', width: 1 },
      ticks: { stroke: 'rgba(125,136,150,0.25)', width: 1 },
      font: '11px system-ui, sans-serif',
    }
    return {
      width: Math.max(200, el.clientWidth),
      height: 160,
      cursor: { drag: { x: false, y: false } },
      legend: { show: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [axis, { ...axis, size: 56 }],
      series: [
        {},
        ...series.map((label, i) => ({
          label,
          stroke: colors[i],
          width: 1.6,
          fill: i === 0 ? colors[i] + '22' : undefined,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? '–' : fmtRate(v)),
        })),
      ],
    }
  }
  function makeCharts() {
    if (typeof uPlot !== 'function') return
    const rateEl = $('chart-rate')
    const backlogEl = $('chart-backlog')
    state.charts.rate = new uPlot(chartOpts(rateEl, ['msg/s'], ['#4aa3ff']), [[], []], rateEl)
    state.charts.backlog = new uPlot(
      chartOpts(backlogEl, ['pending on nodes', 'held at broker'], ['#d29922', '#a371f7']),
      [[], [], []],
      backlogEl,
    )
    const ro = new ResizeObserver(() => {
      state.charts.rate.setSize({ width: Math.max(200, rateEl.clientWidth), height: 160 })
      state.charts.backlog.setSize({ width: Math.max(200, backlogEl.clientWidth), height: 160 })
    })
    ro.observe(rateEl)
    ro.observe(backlogEl)
  }
  function renderCharts() {
    if (!state.charts.rate) return
    const h = state.history
    const t = h.map((s) => s.t / 1000)
    state.charts.rate.setData([t, h.map((s) => s.rate)])
    state.charts.backlog.setData([t, h.map((s) => s.backlog), h.map((s) => s.held)])
  }

  // ---------- polling ----------
  async function refresh() {
    try {
      const [fleet, alerts, hist] = await Promise.all([
        api('/v1/nodes'),
        api('/v1/alerts?limit=50'),
        api('/v1/history?since=' + state.lastT),
      ])
      hideAuth()
      state.failures = 0
      state.nodes = fleet.nodes
      if (hist.samples.length) {
        state.history = state.history.concat(hist.samples).slice(-720)
        state.lastT = hist.samples[hist.samples.length - 1].t
      }
      renderSummary(fleet, alerts, state.history[state.history.length - 1])
      renderAlerts(alerts)
      renderNodes()
      renderCharts()
      setConn('live', 'live')
      $('updated').textContent = 'updated ' + new Date(fleet.now).toLocaleTimeString()
      document.body.dataset.loaded = 'true'
    } catch (err) {
      if (err instanceof AuthError) showAuth(err.message)
      else {
        state.failures++
        setConn('error', 'broker unreachable, retrying')
      }
    }
  }
  function schedule() {
    clearTimeout(state.timer)
    state.timer = setTimeout(async () => {
      await refresh()
      schedule()
    }, POLL_MS)
  }

  function init() {
    forgetOldToken()
    makeCharts()
    for (const th of document.querySelectorAll('#nodes th')) {
      th.addEventListener('click', () => {
        const key = th.dataset.key
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 }
        renderNodes()
      })
    }
    $('filter').addEventListener('input', (e) => {
      state.filter = e.target.value
      renderNodes()
    })
    $('token-button').addEventListener('click', () => showAuth(''))
    $('token-clear').addEventListener('click', async () => {
      await fetch('/dashboard/session', { method: 'DELETE', credentials: 'same-origin' }).catch(() => {})
      $('token-input').value = ''
      void refresh()
    })
    $('auth-form').addEventListener('submit', async (e) => {
      e.preventDefault()
      const token = $('token-input').value.trim()
      $('token-input').value = ''
      if (!token) return showAuth('paste a monitor or admin token')
      const problem = await signIn(token).catch(() => 'the broker is unreachable')
      if (problem) showAuth(problem)
      else void refresh()
    })
    void refresh().then(schedule)
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init)
  else init()
})()
