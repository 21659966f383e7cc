// Time-series charts with the vendored uPlot (window.uPlot, /static/vendor/uplot-*/).
// Colours come from the theme's CSS variables; charts follow a theme switch and their
// container's width. uPlot styles through the CSSOM only, so it runs under the strict CSP.

import { h } from "./dom.js";
import { byUnit, DASH } from "./format.js";

const HEIGHT = 170;

// Charts are drawn one per animation frame, those on screen first: a refresh of ten charts
// costs ten small frames instead of one long one.
const queue = new Map(); // Chart -> [xs, series]
let painting = 0;
const seen = new IntersectionObserver((entries) => {
  for (const entry of entries) entry.target.__chart.onScreen = entry.isIntersecting;
});

function paintNext() {
  painting = 0;
  let next = null;
  for (const chart of queue.keys()) {
    if (chart.onScreen) {
      next = chart;
      break;
    }
    next = next || chart;
  }
  if (!next) return;
  const [xs, series, range] = queue.get(next);
  queue.delete(next);
  next.apply(xs, series, range);
  if (queue.size) painting = requestAnimationFrame(paintNext);
}

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function theme() {
  return {
    series: [1, 2, 3, 4, 5, 6].map((i) => cssVar(`--chart-${i}`, "#4c6ef5")),
    grid: cssVar("--chart-grid", "rgba(128,128,128,.2)"),
    axis: cssVar("--text-muted", "#666"),
  };
}

function axisValue(unit) {
  return (u, values) =>
    values.map((v) => {
      if (v === null) return "";
      if (unit === "B/s") return byUnit(v, unit).replace("/s", "");
      if (unit === "%") return `${v}`;
      return byUnit(v, unit);
    });
}

export class Chart {
  /** {title, unit, percent} — a figure with a caption, the plot and an empty-state line. */
  constructor({ id, title, unit, percent = false }) {
    this.id = id;
    this.title = title;
    this.unit = unit;
    this.percent = percent;
    this.plot = null;
    this.labels = [];
    this.data = null;
    this.xRange = null;
    this.latest = h("span", { class: "chart-latest" }, DASH);
    this.empty = h("p", { class: "chart-empty", hidden: true }, "No data in this range");
    this.area = h("div", { class: "chart-plot" });
    this.el = h(
      "figure",
      { class: "chart", dataset: { chart: id, points: 0 }, "aria-label": title },
      h("figcaption", null, h("span", { class: "chart-title" }, title), this.latest),
      this.area,
      this.empty,
    );
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.area);
    this.onScreen = false;
    this.el.__chart = this;
    seen.observe(this.el);
    this.onTheme = () => this.rebuild();
    window.addEventListener("oc-theme", this.onTheme);
  }

  width() {
    return Math.max(200, Math.floor(this.area.clientWidth || 300));
  }

  fit() {
    if (this.plot && Math.abs(this.plot.width - this.width()) > 1) {
      this.plot.setSize({ width: this.width(), height: HEIGHT });
    }
  }

  options(labels) {
    const colours = theme();
    const unit = this.unit;
    return {
      width: this.width(),
      height: HEIGHT,
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: {
        x: {
          time: true,
          // History charts span the range asked for (a node saved for a minute shows a
          // minute of points at the end of the hour); live ones span their data.
          range: (u, min, max) => (this.xRange ? this.xRange : [min, max]),
        },
        y: {
          range: (u, min, max) => {
            const top = Number.isFinite(max) && max > 0 ? max * 1.15 : 1;
            return [0, this.percent ? Math.min(100, Math.max(top, 5)) : top];
          },
        },
      },
      axes: [
        {
          stroke: colours.axis,
          grid: { stroke: colours.grid, width: 1 },
          ticks: { stroke: colours.grid, width: 1 },
        },
        {
          stroke: colours.axis,
          grid: { stroke: colours.grid, width: 1 },
          ticks: { show: false },
          size: 56,
          values: axisValue(unit),
        },
      ],
      series: [
        { label: "Time" },
        ...labels.map((label, i) => ({
          label,
          stroke: colours.series[i % colours.series.length],
          width: 1.5,
          value: (u, v) => byUnit(v, unit),
        })),
      ],
    };
  }

  /**
   * xs: unix seconds; series: [{label, values}] (values null for gaps); range: [from, to]
   * for a fixed time axis (history), or none. Drawn soon (one chart per frame).
   */
  setData(xs, series, range = null) {
    queue.set(this, [xs, series, range]);
    if (!painting) painting = requestAnimationFrame(paintNext);
  }

  apply(xs, series, range = null) {
    this.xRange = range;
    const labels = series.map((s) => s.label);
    const data = [xs, ...series.map((s) => s.values)];
    this.data = data;
    let points = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v !== undefined) points += 1;
    // The caption shows the first series' latest value (CPU busy, memory used, rx …).
    let latest = null;
    const lead = series[0] ? series[0].values : [];
    for (let i = lead.length - 1; i >= 0 && latest === null; i -= 1) {
      if (lead[i] !== null && lead[i] !== undefined) latest = lead[i];
    }
    this.el.dataset.points = String(points);
    this.latest.textContent = series.length > 1 && latest !== null
      ? `${series[0].label} ${byUnit(latest, this.unit)}`
      : byUnit(latest, this.unit);
    this.empty.hidden = points > 0;
    this.area.hidden = points === 0;
    if (!this.plot || labels.join("\u0000") !== this.labels.join("\u0000")) {
      this.labels = labels;
      this.rebuild();
    } else {
      this.plot.setData(data);
    }
  }

  rebuild() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    if (!this.data || !window.uPlot) return;
    this.plot = new window.uPlot(this.options(this.labels), this.data, this.area);
  }

  destroy() {
    queue.delete(this);
    seen.unobserve(this.el);
    this.resize.disconnect();
    window.removeEventListener("oc-theme", this.onTheme);
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/** The node view's charts: metric names, label, unit; `transform` maps stored values. */
export const CHARTS = [
  { id: "cpu", title: "CPU", unit: "%", percent: true,
    metrics: { cpu_usage_percent: "busy", cpu_iowait_percent: "iowait", cpu_steal_percent: "steal" } },
  { id: "memory", title: "Memory in use", unit: "%", percent: true,
    metrics: { memory_available_percent: "used" }, transform: (v) => 100 - v },
  { id: "load", title: "Load per CPU", unit: "",
    metrics: { load1_per_cpu: "1 min" } },
  { id: "conntrack", title: "Connection tracking table", unit: "%", percent: true,
    metrics: { conntrack_used_percent: "used" } },
  { id: "net", title: "Network throughput", unit: "B/s",
    metrics: { net_rx_bytes_per_second: "rx", net_tx_bytes_per_second: "tx" } },
  { id: "disk", title: "Disk space used", unit: "%", percent: true,
    metrics: { disk_used_percent: "" } },
  { id: "diskio", title: "Disk I/O", unit: "B/s",
    metrics: { disk_read_bytes_per_second: "read", disk_write_bytes_per_second: "write" } },
  { id: "swap", title: "Swap in use", unit: "%", percent: true,
    metrics: { swap_used_percent: "used" } },
  { id: "fds", title: "File handles in use", unit: "%", percent: true,
    metrics: { fd_used_percent: "used" } },
  { id: "udp", title: "UDP errors", unit: "/s",
    metrics: {
      udp_rcvbuf_errors_per_second: "rcvbuf",
      udp_sndbuf_errors_per_second: "sndbuf",
      udp_in_errors_per_second: "in",
    } },
];

export const CHART_METRICS = CHARTS.flatMap((c) => Object.keys(c.metrics));

/** A series' legend label: the chart's name for the metric plus its label values. */
export function seriesLabel(def, metric, labels) {
  const parts = [def.metrics[metric], ...Object.values(labels || {})].filter(Boolean);
  return parts.join(" ") || metric;
}
