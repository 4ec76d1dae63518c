package vcfagent.lims;

import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

/** The command line, parsed by hand so the jar needs nothing beyond gRPC. */
record Arguments(String ingestTarget, String tenant, Path file, Optional<String> token) {

  static final String USAGE =
      "usage: java -jar vcf-agent-lims-client.jar --ingest HOST:PORT --tenant TENANT FILE [--token TOKEN]";

  /** A command line that cannot be run; the message says what is wrong. */
  static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  static Arguments parse(List<String> args) throws UsageException {
    String ingest = null;
    String tenant = null;
    String token = null;
    Path file = null;
    for (int i = 0; i < args.size(); i++) {
      String arg = args.get(i);
      switch (arg) {
        case "--ingest" -> ingest = value(args, ++i, arg);
        case "--tenant" -> tenant = value(args, ++i, arg);
        case "--token" -> token = value(args, ++i, arg);
        default -> {
          if (arg.startsWith("--")) {
            throw new UsageException("unknown option " + arg);
          }
          if (file != null) {
            throw new UsageException("only one FILE may be given, got " + file + " and " + arg);
          }
          file = Path.of(arg);
        }
      }
    }
    if (ingest == null || !ingest.contains(":")) {
      throw new UsageException("--ingest HOST:PORT is required");
    }
    if (tenant == null || tenant.isBlank()) {
      throw new UsageException("--tenant is required");
    }
    if (file == null) {
      throw new UsageException("a VCF FILE is required");
    }
    return new Arguments(ingest, tenant, file, Optional.ofNullable(token).filter(t -> !t.isBlank()));
  }

  private static String value(List<String> args, int index, String option) throws UsageException {
    if (index >= args.size()) {
      throw new UsageException(option + " needs a value");
    }
    return args.get(index);
  }
}
