/**
 * A stand-in for the AUTOMATIC1111 web UI API (the remote protocol only): txt2img that takes
 * `steps × stepMs` and moves /sdapi/v1/progress as it samples, one job at a time like the real
 * queue lock, /sdapi/v1/interrupt that stops the current job (which, as in A1111, still answers
 * 200 with what it had), pydantic-style 422s and A1111's HTTPException bodies. Reused by
 * end-to-end tests.
 */
import type { ServerResponse } from 'node:http';
import { delay, makePng, sendJson, startRecordingServer, type StandinRequest } from './openai-standin.js';

export interface A1111StandinOptions {
  /** Time per sampling step (ms). Default 10. */
  stepMs?: number;
  /** Known sampler names; others get 404 "Sampler not found". */
  samplers?: string[];
  /** Put a grid image first (index_of_first_image 1), as with opts.return_grid and saving on. */
  returnGrid?: boolean;
  /** Append this many extra images after the batch (as ControlNet does with its maps). */
  extraImages?: number;
  /** Bytes returned for the batch (cycled); default generated PNGs of the requested size. */
  images?: Buffer[];
  /** Runs first for every request; return true when it has answered (inject failures). */
  intercept?: (req: StandinRequest, res: ServerResponse) => boolean | Promise<boolean>;
}

export interface A1111Job {
  body: Record<string, unknown>;
  steps: number;
  step: number;
  interrupted: boolean;
  done: boolean;
}

export interface A1111Standin {
  /** Origin, as a catalog's `base_url`. */
  url: string;
  requests: StandinRequest[];
  options: A1111StandinOptions;
  /** Every txt2img job, in order. */
  jobs: A1111Job[];
  /** The batch images each txt2img answer carried (grid/extra images excluded). */
  sentImages: Buffer[][];
  /** How many /sdapi/v1/interrupt calls arrived. */
  readonly interrupts: number;
  /** The checkpoint currently loaded (after override_settings). */
  readonly checkpoint: string;
  close(): Promise<void>;
}

const DEFAULT_SAMPLERS = ['DPM++ 2M', 'DPM++ SDE', 'Euler a', 'Euler', 'LMS', 'Heun', 'DDIM', 'UniPC'];

type FieldType = 'str' | 'int' | 'float' | 'bool' | 'dict';
const TXT2IMG_FIELDS: Record<string, FieldType> = {
  prompt: 'str', negative_prompt: 'str', styles: 'dict', seed: 'int', subseed: 'int', subseed_strength: 'float',
  width: 'int', height: 'int', steps: 'int', cfg_scale: 'float', sampler_name: 'str', scheduler: 'str', batch_size: 'int',
  n_iter: 'int', restore_faces: 'bool', tiling: 'bool', enable_hr: 'bool', denoising_strength: 'float', override_settings: 'dict',
  override_settings_restore_afterwards: 'bool', send_images: 'bool', save_images: 'bool', alwayson_scripts: 'dict',
  script_name: 'str', do_not_save_samples: 'bool', do_not_save_grid: 'bool', force_task_id: 'str',
};

function typeError(name: string, t: FieldType, v: unknown): { loc: string[]; msg: string; type: string } | undefined {
  const ok =
    (t === 'str' && typeof v === 'string') ||
    (t === 'int' && Number.isInteger(v)) ||
    (t === 'float' && typeof v === 'number') ||
    (t === 'bool' && typeof v === 'boolean') ||
    (t === 'dict' && typeof v === 'object');
  if (ok || v === null) return undefined;
  const names = { str: 'str', int: 'integer', float: 'float', bool: 'boolean', dict: 'dict' } as const;
  return { loc: ['body', name], msg: `value is not a valid ${names[t]}`, type: `type_error.${names[t]}` };
}

export async function startA1111Standin(options: A1111StandinOptions = {}): Promise<A1111Standin> {
  const jobs: A1111Job[] = [];
  const sentImages: Buffer[][] = [];
  let interrupts = 0;
  let checkpoint = 'v1-5-pruned-emaonly.safetensors [6ce0161689]';
  let current: A1111Job | null = null;
  let queue: Promise<void> = Promise.resolve();
  const standin = {} as A1111Standin;

  const server = await startRecordingServer(async (req, res) => {
    const o = standin.options;
    if (o.intercept && (await o.intercept(req, res))) return;
    const route = `${req.method} ${req.path}`;
    switch (route) {
      case 'GET /sdapi/v1/progress':
        return progress(res);
      case 'POST /sdapi/v1/interrupt':
        interrupts++;
        if (current) current.interrupted = true;
        return sendJson(res, 200, {});
      case 'GET /sdapi/v1/samplers':
        return sendJson(res, 200, (o.samplers ?? DEFAULT_SAMPLERS).map((name) => ({ name, aliases: [], options: {} })));
      case 'POST /sdapi/v1/txt2img':
        return txt2img(req, res);
      default:
        return sendJson(res, 404, { detail: 'Not Found' });
    }
  });

  function progress(res: ServerResponse): void {
    const job = current;
    const p = job ? job.step / job.steps : 0;
    sendJson(res, 200, {
      progress: p,
      eta_relative: job ? ((job.steps - job.step) * (standin.options.stepMs ?? 10)) / 1000 : 0,
      state: {
        skipped: false,
        interrupted: job?.interrupted ?? false,
        job: job ? 'txt2img' : '',
        job_count: job ? 1 : 0,
        job_timestamp: '20240101000000',
        job_no: 0,
        sampling_step: job?.step ?? 0,
        sampling_steps: job?.steps ?? 0,
      },
      current_image: null,
      textinfo: null,
    });
  }

  async function txt2img(req: StandinRequest, res: ServerResponse): Promise<void> {
    if (req.body === undefined || typeof req.body !== 'object' || Array.isArray(req.body)) {
      return sendJson(res, 422, { detail: [{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }] });
    }
    const body = req.body as Record<string, unknown>;
    const errors = Object.entries(body)
      .filter(([k]) => k in TXT2IMG_FIELDS)
      .map(([k, v]) => typeError(k, TXT2IMG_FIELDS[k], v))
      .filter((e) => e !== undefined);
    if (errors.length) return sendJson(res, 422, { detail: errors });
    const sampler = (body.sampler_name as string | undefined) ?? 'Euler a';
    if (!(standin.options.samplers ?? DEFAULT_SAMPLERS).includes(sampler)) {
      return sendJson(res, 404, { error: 'HTTPException', detail: 'Sampler not found', body: '', errors: '' });
    }
    const width = (body.width as number | undefined) ?? 512;
    const height = (body.height as number | undefined) ?? 512;
    const steps = (body.steps as number | undefined) ?? 50;
    const batch = (body.batch_size as number | undefined) ?? 1;
    const job: A1111Job = { body, steps, step: 0, interrupted: false, done: false };
    jobs.push(job);

    // One job at a time, like A1111's queue_lock.
    const previous = queue;
    let release!: () => void;
    queue = new Promise((r) => (release = r));
    await previous;
    try {
      current = job;
      const override = body.override_settings as Record<string, unknown> | undefined;
      const previousCheckpoint = checkpoint;
      if (typeof override?.sd_model_checkpoint === 'string') checkpoint = override.sd_model_checkpoint;
      // Like A1111, a client that goes away does not stop sampling; only /interrupt does.
      while (job.step < steps && !job.interrupted && !server.closed) {
        await delay(standin.options.stepMs ?? 10);
        job.step++;
      }
      const requested = (body.seed as number | undefined) ?? -1;
      const seed = requested === -1 ? Math.floor(Math.random() * 4_294_967_295) : requested;
      const given = standin.options.images;
      const batchImages = Array.from({ length: batch }, (_, i) => (given?.length ? given[i % given.length] : makePng(width, height, seed + i)));
      sentImages.push(batchImages);
      const all = [
        ...(standin.options.returnGrid ? [makePng(width * 2, height, 999)] : []),
        ...batchImages,
        ...Array.from({ length: standin.options.extraImages ?? 0 }, (_, i) => makePng(64, 64, 500 + i)),
      ];
      const info = {
        prompt: body.prompt ?? '',
        all_prompts: Array(batch).fill(body.prompt ?? ''),
        negative_prompt: body.negative_prompt ?? '',
        seed,
        all_seeds: Array.from({ length: batch }, (_, i) => seed + i),
        subseed: 12345,
        width,
        height,
        sampler_name: sampler,
        cfg_scale: (body.cfg_scale as number | undefined) ?? 7,
        steps,
        batch_size: batch,
        sd_model_name: checkpoint.split(' ')[0].replace(/\.safetensors$/, ''),
        index_of_first_image: standin.options.returnGrid ? 1 : 0,
        infotexts: [],
        job_timestamp: '20240101000000',
      };
      if (override && body.override_settings_restore_afterwards !== false) checkpoint = previousCheckpoint;
      if (res.destroyed) return;
      sendJson(res, 200, { images: all.map((b) => b.toString('base64')), parameters: body, info: JSON.stringify(info) });
    } finally {
      job.done = true;
      current = null;
      release();
    }
  }

  Object.assign(standin, {
    url: server.origin,
    requests: server.requests,
    options,
    jobs,
    sentImages,
    close: () => server.close(),
  });
  Object.defineProperty(standin, 'interrupts', { get: () => interrupts });
  Object.defineProperty(standin, 'checkpoint', { get: () => checkpoint });
  return standin;
}
