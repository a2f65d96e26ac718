/** Per-task-type rules for `input_data` and `parameters`. Unknown keys are refused, not dropped. */
import { Type, type TObject } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { ValueErrorType } from '@sinclair/typebox/errors';
import { sniffImage } from './media.js';
import { AppError } from './errors.js';
import type { TaskType } from './task.js';

const NonBlank = (maxLength: number, description: string) =>
  Type.String({ minLength: 1, maxLength, pattern: '\\S', description });

const Seed = Type.Integer({ minimum: 0, maximum: 4_294_967_295 });

/** Base64 or a `data:image/...;base64,` URL; decoded and sniffed by the engine. */
const ImageData = Type.String({
  minLength: 1,
  pattern: '^(data:image/[a-zA-Z0-9.+-]+;base64,)?[A-Za-z0-9+/=\\s]+$',
  description: 'Image as base64 or a data URL',
});

interface Rules {
  input: TObject;
  parameters: TObject;
}

const strict = { additionalProperties: false } as const;

export function buildInputRules(maxImageBase64Chars: number): Record<TaskType, Rules> {
  return {
    text_generation: {
      input: Type.Object(
        {
          prompt: NonBlank(200_000, 'Prompt text'),
          system_prompt: Type.Optional(Type.String({ maxLength: 20_000 })),
        },
        strict,
      ),
      parameters: Type.Object(
        {
          max_length: Type.Optional(Type.Integer({ minimum: 1, maximum: 32_768 })),
          max_tokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 32_768 })),
          temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
          top_p: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
          top_k: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
          do_sample: Type.Optional(Type.Boolean()),
          repetition_penalty: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 10 })),
          stop: Type.Optional(
            Type.Union([
              Type.String({ minLength: 1, maxLength: 64 }),
              Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 8 }),
            ]),
          ),
          seed: Type.Optional(Seed),
        },
        strict,
      ),
    },
    image_generation: {
      input: Type.Object(
        {
          prompt: NonBlank(10_000, 'What to draw'),
          negative_prompt: Type.Optional(Type.String({ maxLength: 10_000 })),
        },
        strict,
      ),
      parameters: Type.Object(
        {
          width: Type.Optional(Type.Integer({ minimum: 64, maximum: 2048, multipleOf: 8 })),
          height: Type.Optional(Type.Integer({ minimum: 64, maximum: 2048, multipleOf: 8 })),
          steps: Type.Optional(Type.Integer({ minimum: 1, maximum: 150 })),
          guidance_scale: Type.Optional(Type.Number({ minimum: 0, maximum: 30 })),
          num_images: Type.Optional(Type.Integer({ minimum: 1, maximum: 4 })),
          sampler: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
          seed: Type.Optional(Seed),
        },
        strict,
      ),
    },
    text_to_speech: {
      input: Type.Object({ text: NonBlank(10_000, 'Text to speak') }, strict),
      parameters: Type.Object(
        {
          voice: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_+.-]+$' })),
          speed: Type.Optional(Type.Number({ minimum: 0.25, maximum: 4 })),
          pitch: Type.Optional(Type.Integer({ minimum: 0, maximum: 99 })),
          format: Type.Optional(Type.Literal('wav')),
        },
        strict,
      ),
    },
    image_to_text: {
      input: Type.Object(
        {
          image: Type.String({ ...ImageData, maxLength: maxImageBase64Chars }),
          prompt: Type.Optional(Type.String({ maxLength: 10_000 })),
        },
        strict,
      ),
      parameters: Type.Object(
        {
          language: Type.Optional(Type.String({ pattern: '^[a-z_]{3,8}(\\+[a-z_]{3,8})*$' })),
          mode: Type.Optional(Type.Union([Type.Literal('ocr'), Type.Literal('caption')])),
          max_tokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
        },
        strict,
      ),
    },
  };
}

interface CompiledRules {
  input: TypeCheck<TObject>;
  parameters: TypeCheck<TObject>;
}

export class InputValidator {
  private readonly compiled: Record<string, CompiledRules> = {};

  constructor(maxImageBase64Chars: number) {
    for (const [type, rules] of Object.entries(buildInputRules(maxImageBase64Chars))) {
      this.compiled[type] = {
        input: TypeCompiler.Compile(rules.input),
        parameters: TypeCompiler.Compile(rules.parameters),
      };
    }
  }

  /** Throws VALIDATION_ERROR naming the first offending field. */
  validate(taskType: TaskType, inputData: unknown, parameters: unknown): void {
    const rules = this.compiled[taskType];
    check(rules.input, inputData, 'input_data');
    check(rules.parameters, parameters ?? {}, 'parameters');
    if (taskType === 'image_to_text' && !looksLikeImage((inputData as { image: string }).image)) {
      const reason = 'Not a PNG, JPEG, GIF, BMP, WebP or TIFF image';
      throw new AppError('VALIDATION_ERROR', `Invalid input_data.image: ${reason}`, { details: { field: 'input_data.image', reason } });
    }
  }
}

/** Whether the first bytes of a base64 image (or data URL) are an image format's; the rest is the engine's to decode. */
function looksLikeImage(value: string): boolean {
  const start = value.startsWith('data:') ? value.indexOf(',') + 1 : 0;
  // 36 base64 characters are the 27 bytes the longest signature check needs; whitespace may come between them.
  const head = value.slice(start, start + 256).replace(/\s+/g, '').slice(0, 36);
  return sniffImage(Buffer.from(head.slice(0, head.length - (head.length % 4)), 'base64')) !== null;
}

function check(checker: TypeCheck<TObject>, value: unknown, root: string): void {
  if (checker.Check(value)) return;
  const first = checker.Errors(value).First();
  if (!first) throw new AppError('VALIDATION_ERROR', `Invalid ${root}`, { details: { field: root } });
  const path = first.path.replace(/^\//, '').replace(/\//g, '.');
  let field = path ? `${root}.${path}` : root;
  // A non-blank field's pattern and minimum length mean "not blank"; its type and maximum length speak for themselves.
  const blank =
    (first.type === ValueErrorType.StringPattern || first.type === ValueErrorType.StringMinLength) &&
    (first.schema as { pattern?: string }).pattern === '\\S';
  let reason = blank ? 'Must not be empty or blank' : first.message;
  // An unknown key reports its parent; name the key itself so the caller can fix it.
  if (first.schema && (first.schema as TObject).additionalProperties === false && typeof first.value === 'object') {
    const known = Object.keys((first.schema as TObject).properties ?? {});
    const extra = Object.keys(first.value as object).find((k) => !known.includes(k));
    if (extra !== undefined) {
      field = path ? `${root}.${path}.${extra}` : `${root}.${extra}`;
      reason = `Unknown field; allowed: ${known.join(', ') || 'none'}`;
    }
  }
  throw new AppError('VALIDATION_ERROR', `Invalid ${field}: ${reason}`, { details: { field, reason } });
}
