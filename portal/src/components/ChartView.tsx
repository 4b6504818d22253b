import { useEffect, useRef } from "react";
import {
  ArcElement,
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  DoughnutController,
  Legend,
  LinearScale,
  Tooltip,
  type ChartConfiguration,
} from "chart.js";

Chart.register(BarController, BarElement, DoughnutController, ArcElement, CategoryScale, LinearScale, Tooltip, Legend);

/** A chart.js chart; `config` should be memoised by the caller. */
export function ChartView({ config, height = 260, testId, label }: { config: ChartConfiguration; height?: number; testId?: string; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      ...config,
      options: { responsive: true, maintainAspectRatio: false, animation: false, ...config.options },
    } as ChartConfiguration);
    return () => chart.destroy();
  }, [config]);
  return (
    <div className="chart" style={{ height }}>
      <canvas ref={canvas} role="img" aria-label={label} data-testid={testId} />
    </div>
  );
}

/** Distinct colours for series and categories. */
export const PALETTE = [
  "#2563eb", "#7c3aed", "#0891b2", "#db2777", "#f59e0b", "#65a30d", "#dc2626", "#4f46e5",
  "#0d9488", "#a16207", "#ea580c", "#9333ea", "#0284c7", "#be123c", "#15803d", "#854d0e",
];

export const ACTIVE_COLOR = "#16a34a";
export const IDLE_COLOR = "#cbd5e1";

export function colorFor(name: string, index?: number): string {
  if (name === "Uncategorized") return "#94a3b8";
  if (index !== undefined) return PALETTE[index % PALETTE.length]!;
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length]!;
}
