/**
 * The table name: the only piece of SQL the store does not parameterise. It is validated against a
 * strict identifier pattern once, at construction, and always used double-quoted, so it can never
 * carry SQL of its own.
 */

/** The table `migrate()` creates when no `table` option is given. */
export const DEFAULT_TABLE = 'keygate_api_keys';

/** Letters, digits and `_`, not starting with a digit. */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Longest table name: PostgreSQL truncates identifiers past 63 bytes, and the index names add up
 * to 18 characters (`_created_at_id_idx`) to the table name.
 */
export const MAX_TABLE_NAME_LENGTH = 45;

/** A validated table name and the quoted identifiers derived from it. */
export interface TableName {
  /** As the user wrote it, e.g. `auth.api_keys`. */
  readonly text: string;
  /** The table, quoted and schema-qualified when a schema was given: `"auth"."api_keys"`. */
  readonly qualified: string;
  /** The schema part of a schema-qualified name (`auth`), else `undefined`. */
  readonly schema: string | undefined;
  /** The name of an index or constraint of this table, quoted: `"api_keys_<suffix>"`. */
  indexName(suffix: string): string;
}

function quote(identifier: string): string {
  return `"${identifier}"`;
}

/**
 * Validates `table` (`name`, or `schema.name` for PostgreSQL; {@link DEFAULT_TABLE} when
 * `undefined`) and derives its quoted forms. Throws a TypeError naming the rule it breaks.
 */
export function parseTableName(table: unknown, allowSchema: boolean, where = 'new SqlStore()'): TableName {
  if (table === undefined) return parseTableName(DEFAULT_TABLE, allowSchema, where);
  const rule = `letters, digits and _ (not starting with a digit), at most ${MAX_TABLE_NAME_LENGTH} characters`;
  if (typeof table !== 'string') throw new TypeError(`${where}: \`table\` must be a string of ${rule}`);
  const parts = table.split('.');
  if (parts.length > 2 || (parts.length === 2 && !allowSchema)) {
    throw new TypeError(
      allowSchema
        ? `${where}: \`table\` must be "name" or "schema.name", got ${JSON.stringify(table)}`
        : `${where}: \`table\` cannot be schema-qualified with the sqlite dialect, got ${JSON.stringify(table)}`,
    );
  }
  for (const part of parts) {
    if (!IDENTIFIER.test(part) || part.length > MAX_TABLE_NAME_LENGTH) {
      throw new TypeError(`${where}: \`table\` ${JSON.stringify(table)} is not a safe identifier: use ${rule}`);
    }
  }
  const name = parts[parts.length - 1] as string;
  return {
    text: table,
    qualified: parts.map(quote).join('.'),
    schema: parts.length === 2 ? parts[0] : undefined,
    indexName: (suffix) => quote(`${name}_${suffix}`),
  };
}
