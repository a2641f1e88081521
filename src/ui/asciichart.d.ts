// Types for the part of asciichart (CommonJS, untyped) the dashboard uses.
declare module 'asciichart' {
  interface PlotConfig {
    /** rows of the plot minus one (asciichart draws height + 1 rows) */
    height?: number;
    min?: number;
    max?: number;
    offset?: number;
    padding?: string;
    /** one SGR color sequence per series */
    colors?: string[];
    format?: (x: number, i: number) => string;
    symbols?: string[];
  }
  const asciichart: {
    plot(series: number[] | number[][], cfg?: PlotConfig): string;
    cyan: string;
    magenta: string;
    green: string;
    yellow: string;
    blue: string;
    red: string;
    reset: string;
  };
  export default asciichart;
}
