import { newTaskId } from '../../src/core/ids.js';
import type { NewTask } from '../../src/core/task.js';

/** A new pending text-generation task for model "m", for store tests. */
export const plainTask = (id = newTaskId(), createdAt = Date.now(), prompt = 'p'): NewTask => ({
  id,
  taskType: 'text_generation',
  modelName: 'm',
  inputData: { prompt },
  parameters: {},
  priority: 0,
  maxAttempts: 1,
  timeoutMs: 1000,
  createdAt,
});
