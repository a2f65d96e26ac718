import { execFile } from 'node:child_process';
import { cpus, totalmem } from 'node:os';

/** Facts a worker reports at registration: GPUs when nvidia-smi answers, else the CPU. */
export async function detectHardware(): Promise<Record<string, unknown>> {
  const facts: Record<string, unknown> = {
    cpu_model: cpus()[0]?.model ?? 'unknown',
    cpu_cores: cpus().length,
    memory_mb: Math.round(totalmem() / 1024 / 1024),
  };
  const gpus = await new Promise<string | null>((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { timeout: 5_000 }, (err, stdout) =>
      resolve(err ? null : stdout),
    );
  });
  if (gpus) {
    const list = gpus
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name, mem] = line.split(',').map((x) => x.trim());
        return { name, memory_mb: Number(mem) };
      });
    if (list.length) {
      facts.gpus = list;
      facts.gpu_name = list[0].name;
      facts.gpu_memory_mb = list[0].memory_mb;
    }
  }
  return facts;
}
