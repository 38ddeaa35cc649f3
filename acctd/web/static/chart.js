// The unit page's chart: uPlot (vendored, MIT, see uPlot.LICENSE) over the
// series the server embedded as JSON. "(all)" in and out are shown; every
// policy's lines are in the legend, a click shows them.
(function () {
  "use strict";
  var el = document.getElementById("chart");
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"];
  function iec(v) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"], i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toPrecision(3) : v.toFixed(0)) + " " + units[i];
  }
  if (!data.x.length) {
    el.textContent = "no traffic in this period";
    el.className = "empty";
    return;
  }
  var series = [{}].concat(data.series.map(function (s, i) {
    return {label: s.label, show: s.all, stroke: colors[i % colors.length], width: 2,
            points: {show: true, size: 5},
            dash: s.dir === "out" ? [6, 3] : undefined, value: function (u, v) {
              return v == null ? "-" : iec(v); }};
  }));
  var view = el.dataset.view;
  var fmt = view === "hour" ? "{HH}:{mm}" : view === "day" ? "{D} {MMM}" : "{MMM} {YYYY}";
  function size() {
    return {width: Math.max(300, el.clientWidth), height: el.clientWidth < 600 ? 240 : 320};
  }
  var opts = Object.assign(size(), {
    series: series,
    scales: {x: {time: true}},
    axes: [{values: fmt}, {values: function (u, vals) { return vals.map(iec); }, size: 80}],
    cursor: {drag: {x: false, y: false}}
  });
  var plot = new uPlot(opts, [data.x].concat(data.series.map(function (s) { return s.data; })), el);
  window.addEventListener("resize", function () { plot.setSize(size()); });
  el.dataset.ready = "1";
})();
