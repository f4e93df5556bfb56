// Copy buttons, confirmations and charts for the Tollgate console.
document.addEventListener("click", async (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const text = document.getElementById(copy.dataset.copy).textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    copy.textContent = "Copied";
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  }
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

const PALETTE = ["#3b5bdb", "#12b886", "#f59f00", "#e64980", "#7950f2", "#15aabf", "#fd7e14", "#82c91e"];

function drawCharts() {
  if (!window.Chart) return;
  document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
    const spec = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
    const datasets = spec.series.map((series, i) => ({
      label: series.label,
      data: series.data,
      backgroundColor: series.color || PALETTE[i % PALETTE.length],
      borderColor: series.color || PALETTE[i % PALETTE.length],
      type: series.type || spec.type || "bar",
      stack: spec.stacked ? "all" : undefined,
      tension: 0.25,
    }));
    new window.Chart(canvas, {
      type: spec.type || "bar",
      data: { labels: spec.labels, datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${spec.prefix || ""}${c.parsed.y.toFixed(spec.decimals ?? 4)}` } },
        },
        scales: {
          x: { stacked: !!spec.stacked, grid: { display: false } },
          y: { stacked: !!spec.stacked, beginAtZero: true, ticks: { callback: (v) => `${spec.prefix || ""}${v}` } },
        },
      },
    });
  });
}
document.addEventListener("DOMContentLoaded", drawCharts);
