-- An external step (a payment) whose provider call may have had its effect and
-- gave no definite answer (timed out on every attempt, a garbled reply, pending
-- past its deadline) keeps its idempotency key when the job is retried, so asking
-- again cannot pay twice. That fact lived only in memory: once the job left
-- memory (--finished-job-ttl) or the process restarted, a retry sent the payment
-- under a new key. It is now on the step's row, written with every change of it.
ALTER TABLE job_steps ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false;

-- Rows written before this column: a failed or cancelled payment that has a key
-- may have charged. Keeping its key on a retry is always safe (the provider
-- answers from its record); a fresh key is not.
UPDATE job_steps SET outcome_unknown = true
 WHERE step_name = 'process_payment' AND idempotency_key IS NOT NULL
   AND status IN ('failed', 'cancelled');
