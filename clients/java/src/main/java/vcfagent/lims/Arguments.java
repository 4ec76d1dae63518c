package vcfagent.lims;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The command line, parsed by hand so the jar needs nothing beyond gRPC.
 *
 * <p>The token may come from VCF_AGENT_TOKEN instead of --token (a command line is visible to other
 * users of the machine); TLS is on with --tls-ca FILE (or VCF_AGENT_TLS_CA) or --tls (system roots).
 */
record Arguments(
    String ingestTarget,
    String tenant,
    Path file,
    Optional<String> token,
    boolean tls,
    Optional<Path> tlsCa) {

  static final String USAGE =
      "usage: java -jar vcf-agent-lims-client.jar --ingest HOST:PORT --tenant TENANT FILE"
          + " [--token TOKEN] [--tls-ca CA.pem | --tls]";

  /** A command line that cannot be run; the message says what is wrong. */
  static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  static Arguments parse(List<String> args) throws UsageException {
    return parse(args, System.getenv());
  }

  static Arguments parse(List<String> args, Map<String, String> env) throws UsageException {
    String ingest = null;
    String tenant = null;
    String token = env.get("VCF_AGENT_TOKEN");
    String tlsCa = env.get("VCF_AGENT_TLS_CA");
    boolean tls = false;
    Path file = null;
    for (int i = 0; i < args.size(); i++) {
      String arg = args.get(i);
      switch (arg) {
        case "--ingest" -> ingest = value(args, ++i, arg);
        case "--tenant" -> tenant = value(args, ++i, arg);
        case "--token" -> token = value(args, ++i, arg);
        case "--tls-ca" -> tlsCa = value(args, ++i, arg);
        case "--tls" -> tls = true;
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
    Optional<Path> ca = Optional.ofNullable(tlsCa).filter(c -> !c.isBlank()).map(Path::of);
    if (ca.isPresent() && !Files.isReadable(ca.get())) {
      throw new UsageException("--tls-ca: no readable file at " + ca.get());
    }
    return new Arguments(
        ingest,
        tenant,
        file,
        Optional.ofNullable(token).map(String::strip).filter(t -> !t.isEmpty()),
        tls || ca.isPresent(),
        ca);
  }

  private static String value(List<String> args, int index, String option) throws UsageException {
    if (index >= args.size()) {
      throw new UsageException(option + " needs a value");
    }
    return args.get(index);
  }
}
