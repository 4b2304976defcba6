import type { DailyCount } from "../api/types";

/** The days from (last day - span + 1) to the last reported day, zero where nothing was counted. */
export function fillDays(data: DailyCount[], span = 14): DailyCount[] {
  if (!data.length) return [];
  const counts = new Map(data.map((d) => [d.day, d.count]));
  const days = [...counts.keys()].sort();
  const last = new Date(`${days[days.length - 1]}T00:00:00Z`);
  const first = new Date(`${days[0]}T00:00:00Z`);
  const start = new Date(Math.min(first.getTime(), last.getTime() - (span - 1) * 86_400_000));
  const out: DailyCount[] = [];
  for (let t = start.getTime(); t <= last.getTime(); t += 86_400_000) {
    const day = new Date(t).toISOString().slice(0, 10);
    out.push({ day, count: counts.get(day) ?? 0 });
  }
  return out;
}

/** Key operations per day as an inline SVG bar chart, with a table fallback for screen readers. */
export function OpsChart({ data: reported, width = 560, height = 160 }: { data: DailyCount[]; width?: number; height?: number }) {
  const data = fillDays(reported);
  if (!data.length) return <p className="muted">No key operations recorded yet.</p>;
  const max = Math.max(1, ...data.map((d) => d.count));
  const pad = { left: 36, bottom: 22, top: 8, right: 8 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / data.length;
  const barW = Math.min(28, Math.max(2, step * 0.7));
  const total = data.reduce((s, d) => s + d.count, 0);
  return (
    <figure className="chart">
      <svg
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`Key operations per day: ${total} over ${data.length} days, at most ${max} on one day`}
      >
        <line x1={pad.left} y1={pad.top + plotH} x2={width - pad.right} y2={pad.top + plotH} className="axis" />
        <text x={pad.left - 4} y={pad.top + 8} textAnchor="end" className="tick">{max}</text>
        <text x={pad.left - 4} y={pad.top + plotH} textAnchor="end" className="tick">0</text>
        {data.map((d, i) => {
          const h = (d.count / max) * plotH;
          const x = pad.left + i * step + (step - barW) / 2;
          return (
            <g key={d.day}>
              <rect x={x} y={pad.top + plotH - h} width={barW} height={h} className="bar-rect">
                <title>{`${d.day}: ${d.count}`}</title>
              </rect>
              {(data.length <= 10 || i % Math.ceil(data.length / 7) === 0 || i === data.length - 1) && (
                <text x={x + barW / 2} y={height - 6} textAnchor="middle" className="tick">
                  {d.day.slice(5)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <figcaption className="sr-only">
        <table>
          <tbody>
            {data.map((d) => (
              <tr key={d.day}>
                <th scope="row">{d.day}</th>
                <td>{d.count}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </figcaption>
    </figure>
  );
}
