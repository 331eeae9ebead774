'use strict';
// Validate Backstage entities with @backstage/catalog-model, the same way the
// catalog backend does on ingestion. Driven by tests/backstage_validator.py.
//
// Usage: node backstage_validate.cjs <install-dir>   (entities as a JSON array on stdin)
// <install-dir> holds node_modules/@backstage/catalog-model.
// Prints a JSON array of {ref, error} objects, one per rejected entity (empty if all pass).

const path = require('node:path');

const installDir = process.argv[2];
if (!installDir) {
  process.stderr.write('usage: node backstage_validate.cjs <install-dir> < entities.json\n');
  process.exit(2);
}

function load(name) {
  return require(require.resolve(name, { paths: [path.resolve(installDir)] }));
}

function loadOptional(name) {
  try {
    return load(name);
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      return undefined;
    }
    throw e;
  }
}

const model = load('@backstage/catalog-model');

// Same policy set as the catalog backend's CatalogBuilder.buildEntityPolicy(),
// in the same order (schema first, so a malformed envelope gets a schema error
// rather than a TypeError from a later policy).
const policy = model.EntityPolicies.allOf([
  new model.SchemaValidEntityPolicy(),
  new model.DefaultNamespaceEntityPolicy(),
  new model.NoForeignRootFieldsEntityPolicy(),
  new model.FieldFormatEntityPolicy(),
]);

// The kind validators BuiltinKindsEntityProcessor uses; any missing from this
// package version are skipped. The Template validator lives in
// @backstage/plugin-scaffolder-common and is used only if that is installed too.
const kindValidators = [
  'componentEntityV1alpha1Validator',
  'apiEntityV1alpha1Validator',
  'resourceEntityV1alpha1Validator',
  'groupEntityV1alpha1Validator',
  'locationEntityV1alpha1Validator',
  'userEntityV1alpha1Validator',
  'systemEntityV1alpha1Validator',
  'domainEntityV1alpha1Validator',
]
  .map(name => model[name])
  .filter(Boolean);
const scaffolder = loadOptional('@backstage/plugin-scaffolder-common');
if (scaffolder && scaffolder.templateEntityV1beta3Validator) {
  kindValidators.push(scaffolder.templateEntityV1beta3Validator);
}

function str(value, fallback) {
  return typeof value === 'string' && value !== '' ? value : fallback;
}

function refOf(entity, index) {
  if (!entity || typeof entity !== 'object' || Array.isArray(entity)) {
    return `<entity #${index}>`;
  }
  const meta = entity.metadata && typeof entity.metadata === 'object' ? entity.metadata : {};
  const kind = str(entity.kind, '<no kind>');
  const namespace = str(meta.namespace, model.DEFAULT_NAMESPACE || 'default');
  const name = str(meta.name, '<no name>');
  return `${kind}:${namespace}/${name}`.toLowerCase();
}

function describe(error) {
  let message = error && error.message ? error.message : String(error);
  let cause = error && error.cause;
  while (cause) {
    message += ` (caused by: ${cause.message || String(cause)})`;
    cause = cause.cause;
  }
  return message;
}

async function validate(entity) {
  let enforced;
  try {
    enforced = await policy.enforce(entity);
  } catch (e) {
    return describe(e);
  }
  for (const validator of kindValidators) {
    try {
      if (await validator.check(enforced)) {
        return undefined;
      }
    } catch (e) {
      return describe(e);
    }
  }
  const apiVersion = str(enforced.apiVersion, '');
  if (apiVersion.startsWith('backstage.io/')) {
    return (
      `unknown kind: no Backstage kind validator accepts kind "${enforced.kind}" ` +
      `with apiVersion "${apiVersion}"`
    );
  }
  return undefined;
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  const entities = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  if (!Array.isArray(entities)) {
    throw new TypeError('stdin must be a JSON array of entities');
  }
  const failures = [];
  for (let i = 0; i < entities.length; ++i) {
    const error = await validate(entities[i]);
    if (error !== undefined) {
      failures.push({ ref: refOf(entities[i], i), error });
    }
  }
  process.stdout.write(JSON.stringify(failures));
}

main().catch(e => {
  process.stderr.write(`${(e && e.stack) || e}\n`);
  process.exit(1);
});
