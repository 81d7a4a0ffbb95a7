# Postgres for the deployment (run, event and schedule storage): Debian's postgresql package from the
# local base image (deploy/docker/build_images.sh builds it), so nothing is pulled from a registry.
#   docker build -f deploy/docker/postgres.Dockerfile -t restem-postgres:local deploy/docker
ARG BASE_IMAGE=restem-base:local
FROM ${BASE_IMAGE}
COPY postgres-entrypoint.sh /usr/local/bin/restem-postgres
RUN chmod 755 /usr/local/bin/restem-postgres \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
USER postgres
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 5432
CMD ["/usr/local/bin/restem-postgres"]
