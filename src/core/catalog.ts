import { TASK_TYPES, type ModelRef, type TaskType } from './task.js';

export interface CatalogEntry {
  /** The `model_name` clients send. */
  name: string;
  taskTypes: TaskType[];
  /** Engine that runs it: llama-cpp, espeak, tesseract, openai, a1111, … */
  engine: string;
  options: Record<string, unknown>;
  description?: string;
}

export class ModelCatalog {
  private readonly byName = new Map<string, CatalogEntry>();

  constructor(entries: CatalogEntry[]) {
    for (const e of entries) {
      if (this.byName.has(e.name)) throw new Error(`Model catalog lists "${e.name}" twice`);
      this.byName.set(e.name, e);
    }
  }

  get(name: string): CatalogEntry | undefined {
    return this.byName.get(name);
  }

  entries(): CatalogEntry[] {
    return [...this.byName.values()];
  }

  refs(): ModelRef[] {
    return this.entries().flatMap((e) => e.taskTypes.map((taskType) => ({ taskType, modelName: e.name })));
  }

  /** Parses the catalog file's JSON shape; throws a message naming the bad entry. */
  static parse(doc: unknown, source = 'model catalog'): ModelCatalog {
    const models = (doc as { models?: unknown })?.models;
    if (!Array.isArray(models)) throw new Error(`${source}: expected {"models": [...]}`);
    return new ModelCatalog(
      models.map((m, i) => {
        const where = `${source}: models[${i}]`;
        if (typeof m !== 'object' || m === null) throw new Error(`${where} is not an object`);
        const { name, task_type, task_types, engine, options, description, ...rest } = m as Record<string, unknown>;
        if (Object.keys(rest).length) throw new Error(`${where} has unknown keys: ${Object.keys(rest).join(', ')}`);
        if (typeof name !== 'string' || !name) throw new Error(`${where}.name must be a non-empty string`);
        if (typeof engine !== 'string' || !engine) throw new Error(`${where}.engine must be a non-empty string`);
        const types = (task_types ?? (task_type === undefined ? undefined : [task_type])) as unknown;
        if (!Array.isArray(types) || types.length === 0 || !types.every((t) => TASK_TYPES.includes(t))) {
          throw new Error(`${where} needs task_type (or task_types) from: ${TASK_TYPES.join(', ')}`);
        }
        if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
          throw new Error(`${where}.options must be an object`);
        }
        return {
          name,
          engine,
          taskTypes: types as TaskType[],
          options: (options as Record<string, unknown>) ?? {},
          description: typeof description === 'string' ? description : undefined,
        };
      }),
    );
  }
}
