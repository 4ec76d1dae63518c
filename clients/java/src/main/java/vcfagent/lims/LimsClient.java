package vcfagent.lims;

import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientInterceptors;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import vcf_agent.v1.Events.JobState;
import vcf_agent.v1.IngestServiceGrpc;
import vcf_agent.v1.Jobs.FileIssue;
import vcf_agent.v1.Jobs.Job;
import vcf_agent.v1.Jobs.StageCounts;
import vcf_agent.v1.Jobs.SubmitVcfMetadata;
import vcf_agent.v1.Jobs.WatchJobRequest;

/**
 * What a LIMS runs per sequencing run: submit the VCF, follow the job, and let the exit code say
 * whether the variants were stored (0), the job failed or was cancelled (1), the command line was
 * wrong (2), or the service could not be reached or refused the call (3).
 */
public final class LimsClient {

  static final int EXIT_COMPLETE = 0;
  static final int EXIT_JOB_NOT_COMPLETE = 1;
  static final int EXIT_USAGE = 2;
  static final int EXIT_CALL_FAILED = 3;

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private LimsClient() {}

  public static void main(String[] argv) throws InterruptedException {
    System.exit(run(List.of(argv), System.out, System.err));
  }

  static int run(List<String> argv, PrintStream out, PrintStream err) throws InterruptedException {
    Arguments args;
    try {
      args = Arguments.parse(argv);
    } catch (Arguments.UsageException e) {
      err.println("error: " + e.getMessage());
      err.println(Arguments.USAGE);
      return EXIT_USAGE;
    }
    if (!Files.isRegularFile(args.file()) || !Files.isReadable(args.file())) {
      err.println("error: no readable file at " + args.file());
      return EXIT_USAGE;
    }
    ChannelCredentials credentials;
    try {
      credentials = credentials(args);
    } catch (IOException | IllegalArgumentException e) {
      err.println("error: reading the TLS CA certificate " + args.tlsCa().orElse(null) + ": " + e.getMessage());
      return EXIT_USAGE;
    }
    if (!args.tls() && args.token().isPresent()) {
      err.println("warning: sending the token without TLS; use --tls-ca unless the network is trusted");
    }
    ManagedChannel channel = Grpc.newChannelBuilder(args.ingestTarget(), credentials).build();
    try {
      return submitAndWatch(withToken(channel, args), args, out, err);
    } catch (StatusRuntimeException e) {
      Status status = e.getStatus();
      err.println("error: " + status.getCode() + ": " + status.getDescription());
      return EXIT_CALL_FAILED;
    } catch (IOException e) {
      err.println("error: reading " + args.file() + ": " + e.getMessage());
      return EXIT_CALL_FAILED;
    } finally {
      channel.shutdownNow();
      channel.awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** TLS trusting the given CA (or the system's roots), else plaintext. */
  private static ChannelCredentials credentials(Arguments args) throws IOException {
    if (!args.tls()) {
      return InsecureChannelCredentials.create();
    }
    if (args.tlsCa().isEmpty()) {
      return TlsChannelCredentials.create();
    }
    return TlsChannelCredentials.newBuilder().trustManager(args.tlsCa().get().toFile()).build();
  }

  private static Channel withToken(ManagedChannel channel, Arguments args) {
    return args.token()
        .<Channel>map(
            token -> {
              Metadata headers = new Metadata();
              headers.put(AUTHORIZATION, "Bearer " + token);
              return ClientInterceptors.intercept(
                  channel, MetadataUtils.newAttachHeadersInterceptor(headers));
            })
        .orElse(channel);
  }

  private static int submitAndWatch(Channel channel, Arguments args, PrintStream out, PrintStream err)
      throws IOException, InterruptedException {
    SubmitVcfMetadata metadata =
        SubmitVcfMetadata.newBuilder()
            .setTenantId(args.tenant())
            .setFileName(args.file().getFileName().toString())
            .build();
    Job job = VcfUpload.submit(IngestServiceGrpc.newStub(channel), metadata, args.file());
    out.println("submitted " + describe(job) + " duplicate_of_earlier=" + job.getDuplicateOfEarlier());
    out.flush();

    Iterator<Job> updates =
        IngestServiceGrpc.newBlockingStub(channel)
            .watchJob(WatchJobRequest.newBuilder().setJobId(job.getJobId()).build());
    while (updates.hasNext()) {
      job = updates.next();
      out.println("update " + describe(job));
      out.flush();
    }
    // The last update is the whole job: the faults of the file it read past and kept going.
    for (FileIssue issue : job.getFileIssuesList()) {
      out.println(describe(issue));
    }
    if (job.getMoreFileIssues()) {
      out.println("issues more=true (vcf-agent validate lists every one)");
    }
    out.flush();
    if (job.getState() == JobState.JOB_STATE_COMPLETE) {
      return EXIT_COMPLETE;
    }
    err.println("error: job " + job.getJobId() + " ended " + job.getState() + ": " + job.getError());
    return EXIT_JOB_NOT_COMPLETE;
  }

  /** One line per file issue, key=value with the free-text message last. */
  static String describe(FileIssue issue) {
    return "issue line=" + issue.getLine()
        + " column=" + issue.getColumn()
        + " code=" + issue.getCode()
        + " severity=" + (issue.getWarning() ? "warning" : "error")
        + " message=" + issue.getMessage().replace('\n', ' ');
  }

  /** One line per update, key=value, so scripts and people can both read it. */
  static String describe(Job job) {
    StageCounts counts = job.getCounts();
    StringBuilder line =
        new StringBuilder()
            .append("job=").append(job.getJobId())
            .append(" state=").append(job.getState())
            .append(" ingested=").append(counts.getIngested())
            .append(" analysed=").append(counts.getAnalysed())
            .append(" stored=").append(counts.getStored())
            .append(" dead_lettered=").append(counts.getDeadLettered())
            .append(" total=").append(counts.getTotal());
    if (!job.getError().isEmpty()) {
      line.append(" error=").append(job.getError().replace('\n', ' '));
    }
    return line.toString();
  }
}
