// Type declarations for jobwire-client.js (the jobwire.v1 browser client; docs/protocol.md).

export type ConnectionState = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'resyncing' | 'closed';
export type JobStatus = 'initiated' | 'validating' | 'processing' | 'completed' | 'failed' | 'cancelled';
export type StepStatus = 'pending' | 'in_progress' | 'waiting_otp' | 'retrying' | 'completed' | 'failed' | 'cancelled';
export type OtpStatus = 'requested' | 'received' | 'verified' | 'failed' | 'expired';
export type OtpType = 'gyftr_login' | 'amazon_login' | 'payment';

/** A job_runs row (docs/api.md "The job object"). Timestamps are ISO 8601 strings. */
export interface JobRow {
  id: string;
  user_id: string;
  job_type: string;
  status: JobStatus;
  current_phase: string | null;
  progress_percentage: number;
  total_transactions: number;
  completed_transactions: number;
  transaction_amount: number;
  transaction_count: number;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
  error_message: string | null;
  retry_count: number;
  metadata: Record<string, unknown>;
  cancel_requested: boolean;
  [field: string]: unknown;
}

export interface StepRow {
  id: string;
  job_run_id: string;
  step_name: string;
  step_type: string;
  status: StepStatus;
  transaction_index: number | null;
  started_at: string | null;
  completed_at: string | null;
  timeout_at: string | null;
  step_data: Record<string, unknown>;
  error_message: string | null;
  created_at: string;
  attempt: number;
  idempotency_key: string | null;
  next_retry_at: string | null;
  updated_at: string;
  [field: string]: unknown;
}

export interface OtpRequestRow {
  id: string;
  job_run_id: string;
  job_step_id: string;
  otp_type: OtpType | string;
  phone_number: string | null;
  requested_at: string;
  received_at: string | null;
  verified_at: string | null;
  timeout_at: string | null;
  attempts_count: number;
  max_attempts: number;
  status: OtpStatus;
  [field: string]: unknown;
}

export interface DeltaMessage {
  type: 'delta';
  job_id: string;
  seq: number;
  ts: number;
  table: 'job_runs' | 'job_steps' | 'otp_requests';
  op: 'INSERT' | 'UPDATE';
  row: JobRow | StepRow | OtpRequestRow;
}

export interface OtpResult {
  type: 'otp.result';
  ref: string;
  ok: boolean;
  error?: 'invalid_otp' | 'otp_not_accepted' | 'provider_error' | 'cancelled' | 'step_failed' | string;
  message?: string;
  attempts_left: number;
}

export interface HelloLimits {
  max_frame: number;
  max_subscriptions: number;
  max_queue_bytes: number;
  replay_window: number;
  [field: string]: unknown;
}

export class JobwireError extends Error {
  constructor(code: string, message: string);
  /** The server's error code, or `not_connected`, `disconnected`, `timeout`. */
  code: string;
}

export class JobState {
  constructor(jobId: string);
  readonly jobId: string;
  seq: number | null;
  job: JobRow | null;
  steps: Map<string, StepRow>;
  otpRequests: Map<string, OtpRequestRow>;
  deltas: DeltaMessage[];
  sync: 'pending' | 'synced' | 'resyncing' | 'error';
  error: { code: string; message: string } | null;
  readonly terminal: boolean;
  stepList(): StepRow[];
  otpList(): OtpRequestRow[];
  waitingOtps(): OtpRequestRow[];
  toJSON(): { job_id: string; seq: number | null; job: JobRow | null; steps: StepRow[]; otp_requests: OtpRequestRow[] };
}

export interface ConnectionEventDetail {
  state: ConnectionState;
  previous: ConnectionState;
  attempt: number;
  /** true on the `live` that follows a reconnect: every subscription is back in sync. */
  resumed: boolean;
  delayMs?: number;
  code?: number;
  reason?: string;
}

export interface JobEventDetail {
  jobId: string;
  job: JobState;
  cause: 'snapshot' | 'delta' | 'resumed' | 'error';
  delta?: DeltaMessage;
}

export interface JobwireClientEventMap {
  connection: CustomEvent<ConnectionEventDetail>;
  hello: CustomEvent<{ userId: string | null; limits: HelloLimits | null }>;
  job: CustomEvent<JobEventDetail>;
  joberror: CustomEvent<{ jobId: string; code: string; message: string }>;
  auth: CustomEvent<{ code: string; message: string }>;
  servererror: CustomEvent<{ code: string; message: string; ref?: string | number }>;
}

export interface JobwireClientOptions {
  token: string;
  url?: string;
  WebSocket?: typeof WebSocket;
  initialDelayMs?: number;
  maxDelayMs?: number;
  factor?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  otpTimeoutMs?: number;
  maxDeltas?: number;
}

export class JobwireClient extends EventTarget {
  constructor(options: JobwireClientOptions);
  token: string;
  url: string;
  state: ConnectionState;
  userId: string | null;
  limits: HelloLimits | null;
  attempt: number;
  jobs: Map<string, JobState>;
  connect(): void;
  close(): void;
  setToken(token: string): void;
  subscribe(jobId: string): JobState;
  unsubscribe(jobId: string): void;
  job(jobId: string): JobState | undefined;
  submitOtp(otpRequestId: string, value: string): Promise<OtpResult>;

  addEventListener<K extends keyof JobwireClientEventMap>(
    type: K,
    listener: (ev: JobwireClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof JobwireClientEventMap>(
    type: K,
    listener: (ev: JobwireClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}
