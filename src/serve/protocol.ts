// The JSON that `serve` sends and the page reads, and the model summary (summary.ts) it carries. Types only,
// importing nothing: the page's build (page/tsconfig.json) compiles this file too, for the browser.

export type ModuleType = 'Conv2d' | 'ReLU' | 'MaxPool2d' | 'Flatten' | 'Linear';

export interface LayerSummary {
  /** the module's index in PyTorch's nn.Sequential: its tensors are `<name>.weight` and `<name>.bias` */
  name: string;
  type: ModuleType;
  /** the output of one sample: [features], or [channels, height, width] */
  output: number[];
  params: number;
  /** the tensors of a safetensors file holding this layer, with their shapes */
  tensors: { name: string; shape: number[] }[];
  /** FLOPs of one sample's forward pass (2 per multiply-add) */
  forwardFlops: number;
  /** FLOPs of one sample's backward pass: weight gradient, and input gradient but for the first layer */
  backwardFlops: number;
}

export interface ModelSummary {
  /** the network in one line (model.ts describeModel) */
  network: string;
  /** one sample's input */
  input: number[];
  layers: LayerSummary[];
  params: number;
  /** the parameters as float32 */
  weightBytes: number;
  /** per sample */
  forwardFlops: number;
  /** per sample: forward, input gradients and weight gradients */
  trainFlops: number;
  /** the shared arena a training run of this network builds with these settings (memory.ts) */
  arena: {
    bytes: number;
    batchSize: number;
    threads: number;
    optimizer: 'sgd' | 'adam' | 'adamw';
    trainCount: number;
    testCount: number;
  };
}

/** POST /api/predict: what the model says of the image, as `mnist-par predict` computes it. */
export interface PredictResponse {
  digit: number;
  label: string;
  /** softmax over the classes */
  probabilities: number[];
  /** the 28×28 input the model saw after preprocessing, row-major, ink 255 on black 0 */
  input: number[];
  /** milliseconds the server spent on the request: decoding, preprocessing, forward pass */
  ms: number;
}

/** Any refused request: the one-line message the command line would print (without "mnist-par: "). */
export interface ErrorResponse {
  error: string;
}

/** One row of the run's epoch_metrics.csv (metrics.ts EpochRecord). */
export interface EpochRow {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  /** on the test split */
  valLoss: number;
  valAccuracy: number;
  lr: number;
  seconds: number;
}

/** GET /api/info: the model and what the run's files say about it. */
export interface InfoResponse {
  /** the model file, as given or found */
  model: string;
  network: string;
  dataset: string;
  /** the class names, index by index */
  classes: string[];
  /** at the run's batch size, threads and optimizer when its config.json says them, else train's defaults */
  summary: ModelSummary;
  /** epoch_metrics.csv beside the model: its rows, or why there are none */
  epochs: EpochRow[];
  epochsNote: string | null;
  /** the charts found in the run's plot folder, each served at /plots/<file> */
  charts: { file: string; title: string }[];
}
