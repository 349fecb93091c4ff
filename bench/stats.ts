/** Median/min/max of a sample; benchmarks quote medians because these machines are noisy. */
export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function summarize(xs: readonly number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { n: s.length, median, min: s[0]!, max: s[s.length - 1]!, samples: [...xs] };
}
