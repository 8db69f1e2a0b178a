<?php
// The real producer for tests/producers.rs: logs a mix of audit events and ordinary logs
// through the real monolog library (Debian's php-monolog) in each setup a Laravel or monolog
// application ships with, and writes, per setup, the log and the list of audit events it wrote.
//
//     php tests/producers/monolog.php OUTDIR
//
// For each setup S it writes OUTDIR/S.log (what the application writes to stdout) and
// OUTDIR/S.expected: one line per audit event, in the order written,
// `<type>\t<time>`, where <time> is the event's time as auditrail writes it (RFC 3339, UTC,
// milliseconds) when the line that carries the event also carries its time, else `null`.
//
// An audit event is a log call whose context has `log_event_type` or `message_slug`, or whose
// `message_slug` a processor moved into `extra`. Everything else is an ordinary log, and some
// of those are made to look like audit events (the keys in the message text, JSON objects
// holding them inside the message, nested in the context, multi-line messages).
//
// Setups:
// - json: Laravel's `'formatter' => JsonFormatter::class` (JsonFormatter's defaults), one
//   record per line;
// - json-newlines: JsonFormatter in BATCH_MODE_NEWLINES, records written in batches of three;
// - laravel: the LineFormatter Laravel's LogManager builds,
//   `new LineFormatter(null, 'Y-m-d H:i:s', true, true, true)`: line breaks kept, empty context
//   and extra left out (no trailing `[]`);
// - default: monolog's own default, the StreamHandler's default LineFormatter: date
//   `Y-m-d\TH:i:s.uP`, line breaks replaced, `[]` for an empty context or extra;
// - laravel-broken: an audit event whose context holds a value with a line break, which
//   Laravel's formatter writes as a context object cut over two physical lines (no line holds
//   valid JSON): it cannot be shipped and must be counted invalid, never lost silently.

declare(strict_types=1);

require '/usr/share/php/Monolog/autoload.php';

use Monolog\Formatter\JsonFormatter;
use Monolog\Formatter\LineFormatter;
use Monolog\Handler\StreamHandler;
use Monolog\Handler\TestHandler;
use Monolog\Logger;
use Monolog\Processor\UidProcessor;

if ($argc !== 2 || !is_dir($argv[1])) {
    fwrite(STDERR, "usage: php monolog.php OUTDIR\n");
    exit(2);
}
$out = $argv[1];

/** The audit events seen by the capture processor, in order: [type, time, multi-line message]. */
$audit = [];

/**
 * A processor that notes each audit event as monolog hands it to the handler: its type and
 * its time. It runs last (processors run in reverse order of pushing, it is pushed first), so
 * it sees the slug a processor moved into `extra`.
 */
function capture(array &$audit): callable
{
    return function (array $record) use (&$audit): array {
        foreach (['message_slug', 'log_event_type'] as $key) {
            if (isset($record['context'][$key])) {
                $audit[] = [$record['context'][$key], $record['datetime'], str_contains($record['message'], "\n")];
                return $record;
            }
        }
        foreach (['message_slug', 'log_event_type'] as $key) {
            if (isset($record['extra'][$key])) {
                $audit[] = [$record['extra'][$key], $record['datetime'], str_contains($record['message'], "\n")];
                return $record;
            }
        }
        return $record;
    };
}

/** Moves a context's `_slug` into `extra.message_slug`, as an application's processor might. */
function slug_to_extra(array $record): array
{
    if (isset($record['context']['_slug'])) {
        $record['extra']['message_slug'] = $record['context']['_slug'];
        unset($record['context']['_slug']);
    }
    return $record;
}

/**
 * Two loggers on one handler: `auth` with no processor (empty extra) and `audit-uid` with
 * monolog's UidProcessor and the slug processor (extra always set).
 */
function loggers($handler, DateTimeZone $zone, array &$audit): array
{
    $plain = new Logger('access-manager-auth', [$handler], [], $zone);
    $plain->pushProcessor(capture($audit));
    $uid = new Logger('audit-uid', [$handler], [], $zone);
    $uid->pushProcessor(capture($audit));
    $uid->pushProcessor(new UidProcessor(12));
    $uid->pushProcessor('slug_to_extra');
    return [$plain, $uid];
}

/** The log calls every setup makes, on both loggers. */
function workload(Logger $log): void
{
    // Audit events.
    $log->info('User authentication successful.', [
        'log_event_type' => 'auth-login-success',
        'log_class' => 'App\\Http\\Controllers\\Auth\\Okta\\LoginController',
        'ip_address' => '127.0.0.1',
    ]);
    $log->info('Group member created', [
        'message_slug' => 'auth-provider-group-meta-user-created',
        'author_id' => '518ae452-5b4b-1b75-321c-52966bd8c676',
        'entity_model' => 'AuthUser',
    ]);
    $log->notice("Role changed\nfrom viewer\nto admin", [
        'log_event_type' => 'role-changed',
        'user_id' => 7,
    ]);
    $log->info("Import finished:\n{\"rows\": 3, \"log_event_type\": \"not-this-one\"}\n", [
        'message_slug' => 'import-finished',
        'changes' => ['added' => [1, 2], 'removed' => null, 'note' => 'café / "quoted" \\ ok'],
    ]);
    $log->warning('Password reset requested', ['log_event_type' => 'password-reset', 'empty' => []]);
    $log->info('Exported report', ['_slug' => 'report-exported', 'report' => 'q3']);
    $log->info('Session ended', ['_slug' => 'session-ended']);

    // Ordinary logs.
    $log->info('Request received');
    $log->debug('Cache miss', ['key' => 'users:7']);
    $log->info('The log_event_type and message_slug context keys mark audit events');
    $log->info('Forwarding {"log_event_type":"fake-inline"} upstream', ['attempt' => 1]);
    $log->info('Echo {"message_slug":"fake-end"}');
    $log->info('Echo {"message_slug":"fake-end-ctx"}', ['a' => 1]);
    $log->info('Echo {"log_event_type":"fake-brackets"} []');
    $log->info("Line one\nLine two\nLine three", ['k' => 'v']);
    $log->info("Payload:\n{\"log_event_type\":\"fake-middle\"}\ndone");
    $log->info("Payload:\n{\"message_slug\":\"fake-last\"}");
    $log->info("Payload:\n{\"message_slug\":\"fake-last-ctx\"}", ['b' => 2]);
    $log->info('Nested', ['data' => ['log_event_type' => 'nested', 'message_slug' => 'nested']]);
    $log->error('Import failed', ['exception' => new RuntimeException("boom\nsecond line")]);
}

/** Writes the expected list; `$time` gives the time as auditrail writes it, or `null`. */
function expect(string $path, array $events, callable $time): void
{
    $lines = '';
    foreach ($events as [$type, $when, $multiline]) {
        $lines .= $type . "\t" . $time($when, $multiline) . "\n";
    }
    file_put_contents($path, $lines);
}

$utc = new DateTimeZone('UTC');
$zurich = new DateTimeZone('Europe/Zurich');
$millis = fn (DateTimeInterface $t, bool $multiline = false): string => DateTimeImmutable::createFromInterface($t)
    ->setTimezone(new DateTimeZone('UTC'))->format('Y-m-d\TH:i:s.v\Z');
$seconds = fn (DateTimeInterface $t, bool $multiline = false): string => DateTimeImmutable::createFromInterface($t)
    ->setTimezone(new DateTimeZone('UTC'))->format('Y-m-d\TH:i:s.000\Z');

// json: JsonFormatter as Laravel's `formatter` option builds it, in another zone than UTC.
$audit = [];
$handler = new StreamHandler("$out/json.log");
$handler->setFormatter(new JsonFormatter());
foreach (loggers($handler, $zurich, $audit) as $log) {
    workload($log);
}
$handler->close();
expect("$out/json.expected", $audit, $millis);

// json-newlines: the same records, formatted in batches by BATCH_MODE_NEWLINES.
$audit = [];
$collect = new TestHandler();
foreach (loggers($collect, $zurich, $audit) as $log) {
    workload($log);
}
$records = array_map(function (array $r): array {
    unset($r['formatted']);
    return $r;
}, $collect->getRecords());
$batch = new JsonFormatter(JsonFormatter::BATCH_MODE_NEWLINES);
$text = '';
foreach (array_chunk($records, 3) as $chunk) {
    $text .= $batch->formatBatch($chunk) . "\n";
}
file_put_contents("$out/json-newlines.log", $text);
expect("$out/json-newlines.expected", $audit, $millis);

// laravel: LogManager's formatter, in UTC (Laravel's default `app.timezone`). An event whose
// message has a line break is carried by a continuation line, without the `[ts]` header: the
// line does not say when.
$audit = [];
$handler = new StreamHandler("$out/laravel.log");
$handler->setFormatter(new LineFormatter(null, 'Y-m-d H:i:s', true, true, true));
foreach (loggers($handler, $utc, $audit) as $log) {
    workload($log);
}
$handler->close();
expect("$out/laravel.expected", $audit, fn (DateTimeInterface $t, bool $multiline): string
    => $multiline ? 'null' : $seconds($t));

// default: monolog's own defaults (StreamHandler's LineFormatter), in another zone than UTC.
$audit = [];
$handler = new StreamHandler("$out/default.log");
foreach (loggers($handler, $zurich, $audit) as $log) {
    workload($log);
}
$handler->close();
expect("$out/default.expected", $audit, $millis);

// laravel-broken: a context value with a line break cuts the context object in two.
$audit = [];
$handler = new StreamHandler("$out/laravel-broken.log");
$handler->setFormatter(new LineFormatter(null, 'Y-m-d H:i:s', true, true, true));
[$plain] = loggers($handler, $utc, $audit);
$plain->info('Address changed', ['log_event_type' => 'address-changed', 'address' => "1 Main St\nSpringfield"]);
$handler->close();
expect("$out/laravel-broken.expected", $audit, $seconds);
